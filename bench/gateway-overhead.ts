/**
 * Gateway overhead: latency added by the gateway (p50/p99) and the most
 * requests per second through it, against calling the same upstream directly,
 * for non-streaming and streaming chat completions, measured side by side in
 * one run on loopback. The upstream is a fast stand-in that does no inference
 * (bench/_overhead-upstream.ts), the gateway the real app (bench/_overhead-gateway.ts);
 * each runs in its own process, and the load comes from this one.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { Pool } from "undici";
import { median, percentile } from "./_stats.ts";

const API_KEY = "sk-pomona-bench";
const SEQUENTIAL = 2_000;
const THROUGHPUT_SECONDS = 4;
const CONNECTIONS = 32;
const ROUNDS = 3;

function startChild(script: string, args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [join(import.meta.dirname, script), ...args], {
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  return new Promise((resolve, reject) => {
    child.once("message", (m) => resolve({ child, port: (m as { port: number }).port }));
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

interface Target {
  label: string;
  pool: Pool;
  path: string;
  headers: Record<string, string>;
}

const bodyOf = (stream: boolean) =>
  JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "Say hello." }], max_tokens: 16, stream });

async function once(target: Target, body: string): Promise<void> {
  const res = await target.pool.request({ method: "POST", path: target.path, headers: target.headers, body });
  await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${target.label} answered ${res.statusCode}`);
}

/** Latency of requests one at a time, in ms. */
async function latencies(target: Target, body: string): Promise<number[]> {
  for (let i = 0; i < 200; i++) await once(target, body);
  const out: number[] = [];
  for (let i = 0; i < SEQUENTIAL; i++) {
    const started = performance.now();
    await once(target, body);
    out.push(performance.now() - started);
  }
  return out;
}

/** Requests per second with CONNECTIONS requests always in flight. */
async function throughput(target: Target, body: string): Promise<number> {
  const deadline = performance.now() + THROUGHPUT_SECONDS * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < deadline) {
        await once(target, body);
        done++;
      }
    }),
  );
  return done / THROUGHPUT_SECONDS;
}

const upstream = await startChild("_overhead-upstream.ts", []);
const gateway = await startChild("_overhead-gateway.ts", [String(upstream.port), API_KEY]);
const direct: Target = {
  label: "direct",
  pool: new Pool(`http://127.0.0.1:${upstream.port}`, { connections: CONNECTIONS }),
  path: "/replicas/bench/tiny-a/v1/chat/completions",
  headers: { "content-type": "application/json", authorization: "Bearer bench-node-token" },
};
const through: Target = {
  label: "gateway",
  pool: new Pool(`http://127.0.0.1:${gateway.port}`, { connections: CONNECTIONS }),
  path: "/v1/chat/completions",
  headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}` },
};

try {
  const rows: string[] = [];
  for (const stream of [false, true]) {
    const body = bodyOf(stream);
    const figures = {
      direct: { p50: [] as number[], p99: [] as number[], rps: [] as number[] },
      gateway: { p50: [] as number[], p99: [] as number[], rps: [] as number[] },
    };
    // Alternate the two targets round by round, so drift on a shared machine hits both alike.
    for (let round = 0; round < ROUNDS; round++) {
      for (const target of [direct, through]) {
        const l = await latencies(target, body);
        const f = target === direct ? figures.direct : figures.gateway;
        f.p50.push(percentile(l, 50));
        f.p99.push(percentile(l, 99));
        f.rps.push(await throughput(target, body));
      }
    }
    const d = { p50: median(figures.direct.p50), p99: median(figures.direct.p99), rps: median(figures.direct.rps) };
    const g = { p50: median(figures.gateway.p50), p99: median(figures.gateway.p99), rps: median(figures.gateway.rps) };
    const mode = stream ? "streaming (8 chunks + usage)" : "non-streaming";
    rows.push(
      `| ${mode} | ${d.p50.toFixed(3)} / ${d.p99.toFixed(3)} | ${g.p50.toFixed(3)} / ${g.p99.toFixed(3)} | ${(g.p50 - d.p50).toFixed(3)} / ${(g.p99 - d.p99).toFixed(3)} | ${d.rps.toFixed(0)} | ${g.rps.toFixed(0)} |`,
    );
  }
  console.log(`### Gateway overhead on loopback (median of ${ROUNDS} rounds; ${SEQUENTIAL} sequential requests for latency, ${CONNECTIONS} connections for ${THROUGHPUT_SECONDS} s for throughput)

Load generator, gateway and upstream each in their own process, sharing the machine's cores.

| request | direct p50 / p99 ms | through gateway p50 / p99 ms | added p50 / p99 ms | direct req/s | gateway req/s |
|---|---|---|---|---|---|
${rows.join("\n")}`);
} finally {
  await direct.pool.close();
  await through.pool.close();
  gateway.child.kill();
  upstream.child.kill();
}
