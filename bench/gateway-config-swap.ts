/**
 * Gateway config swap at scale: the time to assemble a config of 100,000 keys
 * and 1,000 models from its stored parts and build the gateway's lookups, the
 * time to re-assemble after one key changed with the other buckets cached, and
 * the cost of a key lookup.
 */
import { createHash } from "node:crypto";
import { decodeCorePart, decodeGatewayConfig, encodeGatewayConfig, type GatewayConfig } from "../crds/api/index.ts";
import { ConfigDecoder } from "../gateway/config-source/config-decoder.ts";
import { RouteTable } from "../gateway/config-source/route-table.ts";
import { median } from "./_stats.ts";

const KEYS = 100_000;
const MODELS = 1_000;
const hashOf = (i: number) => createHash("sha256").update(`sk-pomona-${i}`).digest("hex");

function config(version: number, extraKey: boolean): GatewayConfig {
  return {
    version,
    generatedAt: new Date().toISOString(),
    models: Array.from({ length: MODELS }, (_, i) => ({
      namespace: `team-${i % 50}`,
      name: `model-${i}`,
      aliases: [`alias-${i}`],
      endpoints: [
        {
          url: `http://10.0.${i % 250}.1:8090/replicas/team-${i % 50}/model-${i}-a`,
          replica: `model-${i}-a`,
          node: `mac-${i % 500}`,
          weight: 1,
          slots: 4,
        },
      ],
      fallbacks: [],
      embeddings: true,
      contextSize: 4096,
    })),
    policies: Array.from({ length: 50 }, (_, i) => ({
      namespace: `team-${i}`,
      name: "standard",
      requestsPerMinute: 600,
      scope: "PerKey" as const,
    })),
    keys: Array.from({ length: KEYS + (extraKey ? 1 : 0) }, (_, i) => ({
      hash: hashOf(i),
      namespace: `team-${i % 50}`,
      name: `key-${i}`,
      owner: `owner-${i % 1000}`,
      models: [`model-${i % MODELS}`, `alias-${(i + 1) % MODELS}`],
      rateLimitPolicy: "standard",
    })),
  };
}

const first = encodeGatewayConfig(config(1, false));
const second = encodeGatewayConfig(config(2, true));
const changed = second.buckets.filter((b, i) => b.sha256 !== first.buckets[i]?.sha256).length;

const full: number[] = [];
const incremental: number[] = [];
let table: RouteTable | undefined;
for (let round = 0; round < 5; round++) {
  let started = performance.now();
  table = new RouteTable(
    decodeGatewayConfig(
      decodeCorePart(first.core),
      first.buckets.map((b) => b.bytes),
    ),
  );
  full.push(performance.now() - started);
  // The watcher reads only the changed bucket; decoding still assembles every bucket from its cache.
  started = performance.now();
  table = new RouteTable(
    decodeGatewayConfig(
      decodeCorePart(second.core),
      second.buckets.map((b) => b.bytes),
    ),
  );
  incremental.push(performance.now() - started);
}

/** The longest the event loop was blocked while `work` ran, sampled by a 1 ms timer. */
async function longestStall(work: () => Promise<unknown>): Promise<number> {
  let longest = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  await work();
  await new Promise((r) => setTimeout(r, 5));
  clearInterval(timer);
  return Math.max(longest, performance.now() - last);
}

const decoder = new ConfigDecoder();
const core = decodeCorePart(second.core);
const bytes = second.buckets.map((b) => b.bytes);
await decoder.decode(core, bytes); // start the worker
const inlineStalls: number[] = [];
const workerStalls: number[] = [];
for (let round = 0; round < 5; round++) {
  inlineStalls.push(await longestStall(async () => new RouteTable(decodeGatewayConfig(core, bytes))));
  workerStalls.push(await longestStall(async () => new RouteTable(await decoder.decode(core, bytes))));
}
await decoder.close();

const hashes = Array.from({ length: 10_000 }, (_, i) => hashOf(i * 7));
const lookups: number[] = [];
for (let round = 0; round < 5; round++) {
  const started = performance.now();
  for (const h of hashes) table!.keyByHash(h);
  lookups.push(((performance.now() - started) * 1000) / hashes.length);
}

console.log(`### Config swap: ${KEYS.toLocaleString("en")} keys, ${MODELS.toLocaleString("en")} models (median of 5)

| step | figure |
|---|---|
| stored size (core + 64 buckets, gzip) | ${((first.core.length + first.buckets.reduce((n, b) => n + b.bytes.length, 0)) / 1024).toFixed(0)} KiB |
| assemble and build lookups | ${median(full).toFixed(0)} ms |
| next version, one key added (${changed} bucket read from the API server) | ${median(incremental).toFixed(0)} ms |
| longest event-loop stall during a swap, decoding inline | ${median(inlineStalls).toFixed(0)} ms |
| longest event-loop stall during a swap, decoding in the worker (as the gateway does) | ${median(workerStalls).toFixed(0)} ms |
| key lookup by hash | ${median(lookups).toFixed(3)} µs |`);
