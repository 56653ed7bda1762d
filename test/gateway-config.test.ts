// The gateway follows the config the operator publishes in Secrets of a real API server: it waits for
// one before it is ready, swaps new versions in, never goes back, refuses invalid ones and keeps the
// last good one, re-reads only changed key buckets, and lets requests in flight finish on their config.
// The node behind it is the fake node (test/support/fake-node.ts), slowed so a request can be in flight
// while the config changes.
import { KubernetesObjectApi, PatchStrategy } from "@kubernetes/client-node";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  bucketSecretName,
  CONFIG_DATA_KEY,
  coreSecretName,
  encodeGatewayConfig,
  type GatewayConfig,
} from "../crds/api/index.ts";
import { GatewayConfigWatcher } from "../gateway/config-source/secret-watcher.ts";
import { FakeNode } from "./support/fake-node.ts";
import {
  ConfigFeed,
  createNamespace,
  kubeConfig,
  makeKey,
  model,
  NODE_TOKEN,
  startGateway,
  type TestGateway,
} from "./support/gateway.ts";
import { eventually } from "./support/processes.ts";

const ns = "gw-config";
const node = new FakeNode({ name: "mac-c", token: NODE_TOKEN, streamTokens: 30, tokenDelayMs: 50 });
const first = makeKey(ns, "first");
const second = makeKey(ns, "second");
const crowd = Array.from({ length: 200 }, (_, i) => makeKey(ns, `crowd-${i}`));
let gateway: TestGateway;
let feed: ConfigFeed;

const tiny = () => model(ns, "tiny", { endpoints: [node.endpoint(ns, "tiny-a")] });
const client = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${gateway.url}/v1`, maxRetries: 0 });
const metric = async (name: string) => {
  const text = await (await fetch(`${gateway.url}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
};

async function writeSecret(name: string, bytes: Buffer): Promise<void> {
  const objects = KubernetesObjectApi.makeApiClient(kubeConfig());
  await objects.patch(
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name, namespace: ns },
      data: { [CONFIG_DATA_KEY]: bytes.toString("base64") },
    },
    undefined,
    undefined,
    "pomona-test",
    true,
    PatchStrategy.ServerSideApply,
  );
}

const configOf = (version: number, keys: GatewayConfig["keys"]): GatewayConfig => ({
  version,
  generatedAt: new Date().toISOString(),
  models: [tiny()],
  keys,
  policies: [],
});

beforeAll(async () => {
  await createNamespace(ns);
  await node.start();
  gateway = await startGateway(ns);
  feed = new ConfigFeed(ns);
});

afterAll(async () => {
  await gateway?.close();
  await node.kill();
});

describe("following the published config", () => {
  it("is not ready and answers 503 until a config is published", async () => {
    expect((await fetch(`${gateway.url}/readyz`)).status).toBe(503);
    const err = await client(first.secret)
      .models.list()
      .catch((e: unknown) => e);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    await feed.publish({ models: [tiny()], keys: [first, ...crowd] });
    await gateway.waitForVersion(feed.version);
    expect((await fetch(`${gateway.url}/readyz`)).status).toBe(200);
    expect(await metric("pomona_gateway_config_version")).toBe(feed.version);
  });

  it("swaps in a new version, reading only the key buckets that changed", async () => {
    const readsBefore = await metric("pomona_gateway_config_bucket_reads_total");
    const appliedBefore = await metric("pomona_gateway_config_buckets_applied_total");
    const bucketsBefore = gateway.holder.current?.buckets;
    await feed.publish({ models: [tiny()], keys: [first, second, ...crowd] });
    await gateway.waitForVersion(feed.version);
    expect(await metric("pomona_gateway_config_bucket_reads_total")).toBe(readsBefore + 1);
    // Applied as a delta: one bucket rebuilt, the other 63 taken over as they were.
    expect(await metric("pomona_gateway_config_buckets_applied_total")).toBe(appliedBefore + 1);
    const kept = gateway.holder.current?.buckets.filter((b, i) => b === bucketsBefore?.[i]).length;
    expect(kept).toBe(63);
    const answer = await client(second.secret).chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
    });
    expect(answer.model).toBe("tiny");
  });

  it("never goes back to a lower version", async () => {
    const current = gateway.holder.version;
    const older = encodeGatewayConfig(configOf(current - 1, [first.key]));
    for (const [i, b] of older.buckets.entries()) await writeSecret(bucketSecretName(i), b.bytes);
    await writeSecret(coreSecretName, older.core);
    await gateway.watcher.refresh();
    expect(gateway.holder.version).toBe(current);
    // The second key, missing from the older config, still works.
    const list = await client(second.secret).models.list();
    expect(list.data.map((m) => m.id)).toEqual(["tiny"]);
  });

  it("refuses an invalid config, counts it, and keeps serving the last good one", async () => {
    const current = gateway.holder.version;
    const rejectedBefore = await metric("pomona_gateway_config_rejected_total");
    await writeSecret(coreSecretName, Buffer.from("not gzip at all"));
    await eventually(
      "the garbage core to be refused",
      async () => ((await metric("pomona_gateway_config_rejected_total")) === rejectedBefore + 1 ? true : undefined),
      20_000,
    );
    // A well-formed core whose key bucket holds a malformed key.
    const bad = encodeGatewayConfig(configOf(current + 50, [{ ...first.key, expiresAt: "next tuesday" }]));
    for (const [i, b] of bad.buckets.entries()) await writeSecret(bucketSecretName(i), b.bytes);
    await writeSecret(coreSecretName, bad.core);
    await eventually(
      "the malformed key to be refused",
      async () => ((await metric("pomona_gateway_config_rejected_total")) === rejectedBefore + 2 ? true : undefined),
      20_000,
    );
    expect(gateway.holder.version).toBe(current);
    expect((await client(first.secret).models.list()).data).toHaveLength(1);
    expect((await fetch(`${gateway.url}/readyz`)).status).toBe(200);
    // The operator's next good config is taken again.
    feed.version = current + 100;
    feed.forgetWritten();
    await feed.publish({ models: [tiny()], keys: [first, second] });
    await gateway.waitForVersion(feed.version);
  });

  it("waits for buckets written after their core, then takes the config", async () => {
    const next = feed.version + 1;
    const third = makeKey(ns, "third");
    const encoded = encodeGatewayConfig(configOf(next, [first.key, second.key, third.key]));
    await writeSecret(coreSecretName, encoded.core);
    await new Promise((r) => setTimeout(r, 500));
    expect(gateway.holder.version).toBeLessThan(next);
    for (const [i, b] of encoded.buckets.entries()) await writeSecret(bucketSecretName(i), b.bytes);
    feed.version = next;
    feed.forgetWritten();
    await gateway.waitForVersion(next);
    expect((await client(third.secret).models.list()).data).toHaveLength(1);
  });

  it("lets a request in flight finish on the config it started with", async () => {
    const stream = await client(first.secret).chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "a long answer please" }],
      stream: true,
    });
    // Remove the model while the answer streams.
    await feed.publish({ models: [], keys: [first] });
    await gateway.waitForVersion(feed.version);
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    expect(text.split(" ")).toHaveLength(30);
    const after = await client(first.secret)
      .chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(after).toBeInstanceOf(OpenAI.NotFoundError);
  });

  it("catches up after missing changes while its watch was away: only the buckets that differ are rebuilt", async () => {
    // The watch is gone (as after a dropped connection); two versions are published meanwhile.
    gateway.watcher.stop();
    const fourth = makeKey(ns, "fourth");
    const versionBefore = gateway.holder.version;
    await feed.publish({ models: [tiny()], keys: [first, second, fourth] });
    await feed.publish({ models: [tiny()], keys: [first, fourth] });
    expect(gateway.holder.version).toBe(versionBefore);
    const appliedBefore = await metric("pomona_gateway_config_buckets_applied_total");
    const bucketsBefore = gateway.holder.current?.buckets ?? [];
    const resumed = new GatewayConfigWatcher({
      kubeConfig: kubeConfig(),
      namespace: ns,
      holder: gateway.holder,
      log: gateway.app.log,
      metrics: gateway.metrics,
      notReadyRetryMs: 100,
      resyncMs: 2_000,
    });
    resumed.start();
    try {
      await gateway.waitForVersion(feed.version);
      const table = gateway.holder.current!;
      const differing = table.buckets.filter((b, i) => b.sha256 !== bucketsBefore[i]?.sha256).length;
      expect(differing).toBeGreaterThan(0);
      expect(differing).toBeLessThanOrEqual(2);
      expect(await metric("pomona_gateway_config_buckets_applied_total")).toBe(appliedBefore + differing);
      expect((await client(fourth.secret).models.list()).data).toHaveLength(1);
      const refused = await client(second.secret)
        .models.list()
        .catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(OpenAI.AuthenticationError);
    } finally {
      resumed.stop();
    }
  });
});
