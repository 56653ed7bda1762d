// Busy is not failure, and the gateway's waiting line. The node behind the gateway is the fake node
// (test/support/fake-node.ts) speaking the gateway↔node contract of docs/node-contract.md: a full node's
// 429 with Retry-After, an unloading replica's 503 with Retry-After, headers at admission with keep-alive
// spaces before a slow JSON answer, and a failure after the headers; test/gateway-node-contract.test.ts
// checks the same against the real node-agent. The faults and exact timings are the point here; real inference under
// saturation is test/gateway-overload.test.ts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayModel } from "../crds/api/index.ts";
import { FakeNode } from "./support/fake-node.ts";
import {
  ConfigFeed,
  createNamespace,
  makeKey,
  model,
  NODE_TOKEN,
  policy,
  startGateway,
  type TestGateway,
} from "./support/gateway.ts";
import { eventually } from "./support/processes.ts";

const ns = "gw-busy";
const busy = new FakeNode({ name: "mac-busy", token: NODE_TOKEN, retryAfterSeconds: 3 });
const steady = new FakeNode({ name: "mac-steady", token: NODE_TOKEN });
const unloading = new FakeNode({ name: "mac-unloading", token: NODE_TOKEN, retryAfterSeconds: 2 });
const early = new FakeNode({ name: "mac-early", token: NODE_TOKEN, earlyHeaders: true, keepAliveMs: 50 });
const late = new FakeNode({ name: "mac-late", token: NODE_TOKEN });
const lateUnloading = new FakeNode({
  name: "mac-late-unloading",
  token: NODE_TOKEN,
  lateErrorCode: "replica_unloading",
});
// Nodes that hold answers send their headers at admission, as the contract says, so the short first-byte
// timeout of this gateway measures admission only.
const admitting = { token: NODE_TOKEN, earlyHeaders: true, keepAliveMs: 100 };
const held = new FakeNode({ name: "mac-held", ...admitting });
const extra = new FakeNode({ name: "mac-extra", ...admitting });
const shared = new FakeNode({ name: "mac-shared", ...admitting, capacity: 1, retryAfterSeconds: 1 });
const nodes = [busy, steady, unloading, early, late, lateUnloading, held, extra, shared];
const key = makeKey(ns, "k");
const heavy = makeKey(ns, "heavy");
const light = makeKey(ns, "light");
const batch = makeKey(ns, "batch", { rateLimitPolicy: "bulk" });
let gateway: TestGateway;
let feed: ConfigFeed;
let models: GatewayModel[];

// Short, yet not so short that a stall of this shared machine makes a node that answers look dead.
const FIRST_BYTE_TIMEOUT_MS = 1_000;
const QUEUE_TIMEOUT_MS = 4_000;
const QUEUE_MAX = 3;

async function post(modelName: string, secret = key.secret, signal?: AbortSignal, content = "hi") {
  const res = await fetch(`${gateway.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
    body: JSON.stringify({ model: modelName, messages: [{ role: "user", content }] }),
    signal,
  });
  // biome-ignore lint/suspicious/noExplicitAny: the tests read whichever OpenAI shape came back.
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
}

const metrics = async () => (await fetch(`${gateway.adminUrl}/metrics`)).text();
const queueLength = async (modelName: string) =>
  Number(
    new RegExp(`pomona_gateway_queue_length\\{model="${ns}/${modelName}"\\} (\\d+)`).exec(await metrics())?.[1] ?? 0,
  );
const waitForQueue = (modelName: string, n: number) =>
  eventually(
    `${n} waiting for ${modelName}`,
    async () => ((await queueLength(modelName)) === n ? true : undefined),
    20_000,
  );

beforeAll(async () => {
  await createNamespace(ns);
  for (const n of nodes) await n.start();
  busy.mode = "busy";
  unloading.mode = "unloading";
  late.mode = "late-error";
  lateUnloading.mode = "late-error";
  early.options.answerDelayMs = 5 * FIRST_BYTE_TIMEOUT_MS;
  gateway = await startGateway(ns, {
    upstream: { firstByteTimeoutMs: FIRST_BYTE_TIMEOUT_MS, breakerResetMs: 60_000 },
    queue: { timeoutMs: QUEUE_TIMEOUT_MS, maxPerModel: QUEUE_MAX },
  });
  feed = new ConfigFeed(ns);
  models = [
    model(ns, "busy", { endpoints: [busy.endpoint(ns, "busy-a")] }),
    model(ns, "mixed", { endpoints: [unloading.endpoint(ns, "mixed-u"), steady.endpoint(ns, "mixed-s")] }),
    model(ns, "slow-json", { endpoints: [early.endpoint(ns, "slow-json-a")] }),
    model(ns, "late", { endpoints: [late.endpoint(ns, "late-a")] }),
    model(ns, "late-unloading", {
      endpoints: [lateUnloading.endpoint(ns, "lu-a"), steady.endpoint(ns, "lu-s")],
    }),
    model(ns, "one-slot", { endpoints: [held.endpoint(ns, "one-slot-a", 1)] }),
    model(ns, "grows", { endpoints: [held.endpoint(ns, "grows-a", 1)] }),
    // The gateway may send 4, but the node is already busy with other gateways' requests beyond one.
    model(ns, "shared", { endpoints: [shared.endpoint(ns, "shared-a", 4)] }),
  ];
  await feed.publish({
    models,
    keys: [key, heavy, light, batch],
    policies: [policy(ns, "bulk", { requestsPerMinute: 1_000, scope: "PerKey", priorityClass: "batch" })],
  });
  await gateway.waitForVersion(feed.version);
});

afterAll(async () => {
  await gateway?.close();
  for (const n of nodes) await n.kill();
});

describe("busy is not failure", () => {
  it("never counts a busy node in its breaker, and passes the node's Retry-After on with 503", async () => {
    for (let i = 0; i < 3; i++) {
      const answer = await post("busy");
      expect(answer.status).toBe(503);
      expect(answer.body.error.code).toBe("no_replica_available");
      // The node asked for 3 s; the gateway never tells the client less than what is left of it.
      expect(Number(answer.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(Number(answer.headers.get("retry-after"))).toBeLessThanOrEqual(3);
    }
    expect(busy.busyAnswers).toBeGreaterThanOrEqual(1);
    const text = await metrics();
    expect(text).toMatch(/pomona_gateway_breaker_state\{model="gw-busy\/busy",[^}]*\} 0/);
    expect(text).not.toMatch(/pomona_gateway_upstream_attempts_total\{model="busy",outcome="failed"\}/);
    expect(text).toMatch(/pomona_gateway_upstream_attempts_total\{model="busy",outcome="busy"\} [1-9]/);
  });

  it("counts real failures of the same node: its breaker opens once it fails instead", async () => {
    busy.mode = "fail";
    // Its busy mark from the test before lasts up to 3 s; then every call fails.
    await eventually(
      "the breaker open after failures",
      async () => {
        await post("busy");
        return /pomona_gateway_breaker_state\{model="gw-busy\/busy",[^}]*\} 1/.test(await metrics()) ? true : undefined;
      },
      20_000,
    );
  });

  it("takes a 503 with Retry-After (replica unloading) as unavailable: another replica answers, no breaker counts it", async () => {
    for (let i = 0; i < 10; i++) {
      const answer = await post("mixed", key.secret, undefined, `question ${i}`);
      expect(answer.status).toBe(200);
      expect(answer.body.choices[0].message.content).toBe("from mac-steady");
    }
    expect(unloading.seen.length).toBeGreaterThan(0);
    expect(await metrics()).toMatch(
      /pomona_gateway_breaker_state\{model="gw-busy\/mixed",[^}]*replica="mixed-u"[^}]*\} 0/,
    );
  });

  it("waits out a busy node's Retry-After in the line, then is served (the node was busy with other gateways' load)", async () => {
    const release = shared.hold();
    const first = post("shared");
    await eventually("the first request on the node", async () => (shared.active === 1 ? true : undefined), 10_000);
    const second = post("shared");
    await eventually("a busy answer", async () => (shared.busyAnswers >= 1 ? true : undefined), 10_000);
    release();
    const answers = await Promise.all([first, second]);
    expect(answers.map((a) => a.status)).toEqual([200, 200]);
    expect(Number(answers[1]!.headers.get("x-pomona-queue-ms"))).toBeGreaterThan(0);
    expect(await metrics()).toMatch(/pomona_gateway_breaker_state\{model="gw-busy\/shared",[^}]*\} 0/);
  });
});

describe("sign of life", () => {
  it("completes a non-streamed answer that takes far longer than the first-byte timeout, once the node sent its headers", async () => {
    // Stand-in for the node-agent's early headers (docs/node-contract.md §2): headers at admission, a space
    // every 50 ms, the JSON after 5 s, with a first-byte timeout of 1 s.
    const answer = await post("slow-json");
    expect(answer.status).toBe(200);
    expect(answer.body.choices[0].message.content).toBe("from mac-early");
    expect(answer.body.usage.completion_tokens).toBe(3);
  });

  it("maps an error the node sent after its headers to 502, never as a 200", async () => {
    const answer = await post("late");
    expect(answer.status).toBe(502);
    expect(answer.body.error.code).toBe("upstream_error");
  });

  it("tries another replica when a node starts unloading after it admitted a non-streamed request", async () => {
    for (let i = 0; i < 12; i++) {
      // Different questions, so conversation affinity does not pin them all to one replica.
      const answer = await post("late-unloading", key.secret, undefined, `question ${i}`);
      expect(answer.status).toBe(200);
      expect(answer.body.choices[0].message.content).toBe("from mac-steady");
    }
    expect(lateUnloading.seen.length).toBeGreaterThan(0);
  });
});

describe("the waiting line", () => {
  it("holds a request while the endpoint is at its slots and serves it when the slot frees", async () => {
    const release = held.hold();
    const first = post("one-slot");
    await eventually("one on the node", async () => (held.active === 1 ? true : undefined), 10_000);
    const second = post("one-slot");
    await waitForQueue("one-slot", 1);
    // The gateway sent the node only its one slot's worth.
    expect(held.active).toBe(1);
    release();
    const answers = await Promise.all([first, second]);
    expect(answers.map((a) => a.status)).toEqual([200, 200]);
    expect(answers[0]!.headers.get("x-pomona-queue-ms")).toBe("0");
    expect(Number(answers[1]!.headers.get("x-pomona-queue-ms"))).toBeGreaterThan(0);
    expect(held.maxActive).toBe(1);
  });

  it("answers 503 no_replica_available with Retry-After when the deadline passes", async () => {
    const release = held.hold();
    const first = post("one-slot");
    await eventually("one on the node", async () => (held.active === 1 ? true : undefined), 10_000);
    const late = await post("one-slot");
    expect(late.status).toBe(503);
    expect(late.body.error.code).toBe("no_replica_available");
    expect(late.headers.get("retry-after")).toBe("1");
    release();
    expect((await first).status).toBe(200);
  });

  it("answers 429 model_queue_full with Retry-After when the line is full, and a flooding key gives up its place to another key", async () => {
    const release = held.hold();
    const inService = post("one-slot", heavy.secret);
    await eventually("one on the node", async () => (held.active === 1 ? true : undefined), 10_000);
    const waiting = Array.from({ length: QUEUE_MAX }, () => post("one-slot", heavy.secret));
    await waitForQueue("one-slot", QUEUE_MAX);
    // The same key once more: the line is full and the newcomer holds no fewer places than anyone.
    const refused = await post("one-slot", heavy.secret);
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe("model_queue_full");
    expect(refused.headers.get("retry-after")).toBe("1");
    // Another key: the heavy key's newest waiter leaves the line for it.
    const settled: number[] = [];
    for (const w of waiting) void w.then((a) => settled.push(a.status));
    const lightAnswer = post("one-slot", light.secret);
    await eventually("a heavy waiter evicted", async () => (settled.length === 1 ? true : undefined), 10_000);
    expect(settled).toEqual([429]);
    release();
    const answers = await Promise.all([inService, ...waiting, lightAnswer]);
    expect(answers.filter((a) => a.status === 200)).toHaveLength(QUEUE_MAX + 1);
    expect((await lightAnswer).status).toBe(200);
  });

  it("serves interactive keys before batch keys", async () => {
    const release = held.hold();
    const inService = post("one-slot");
    await eventually("one on the node", async () => (held.active === 1 ? true : undefined), 10_000);
    const order: string[] = [];
    const track = (who: string, p: ReturnType<typeof post>) =>
      p.then((a) => {
        order.push(who);
        return a;
      });
    const batchAnswer = track("batch", post("one-slot", batch.secret));
    await waitForQueue("one-slot", 1);
    const interactive = [track("interactive", post("one-slot", light.secret))];
    await waitForQueue("one-slot", 2);
    interactive.push(track("interactive", post("one-slot", key.secret)));
    await waitForQueue("one-slot", 3);
    release();
    const answers = await Promise.all([inService, batchAnswer, ...interactive]);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    // One slot: answers finish in the order they were served.
    expect(order).toEqual(["interactive", "interactive", "batch"]);
  });

  it("lets a client that disconnects leave the line at once", async () => {
    const release = held.hold();
    const inService = post("one-slot");
    await eventually("one on the node", async () => (held.active === 1 ? true : undefined), 10_000);
    const seen = held.seen.length;
    const controller = new AbortController();
    const gone = post("one-slot", key.secret, controller.signal).catch((e: unknown) => e);
    await waitForQueue("one-slot", 1);
    controller.abort();
    await waitForQueue("one-slot", 0);
    release();
    expect((await inService).status).toBe(200);
    expect(await gone).toBeInstanceOf(Error);
    // The request that left never reached the node.
    await new Promise((r) => setTimeout(r, 200));
    expect(held.seen.length).toBe(seen);
  });

  it("wakes waiting requests when a new config brings another endpoint", async () => {
    const release = held.hold();
    const inService = post("grows");
    await eventually("one on the node", async () => (held.active === 1 ? true : undefined), 10_000);
    const waiting = post("grows");
    await waitForQueue("grows", 1);
    models = models.map((m) =>
      m.name === "grows" ? { ...m, endpoints: [...m.endpoints, extra.endpoint(ns, "grows-b", 1)] } : m,
    );
    await feed.publish({
      models,
      keys: [key, heavy, light, batch],
      policies: [policy(ns, "bulk", { requestsPerMinute: 1_000, scope: "PerKey", priorityClass: "batch" })],
    });
    const answer = await waiting;
    expect(answer.status).toBe(200);
    expect(answer.body.choices[0].message.content).toBe("from mac-extra");
    release();
    expect((await inService).status).toBe(200);
  });

  it("keeps no line or metric series for a model that left the config", async () => {
    await feed.publish({ models: models.filter((m) => m.name !== "one-slot"), keys: [key] });
    await gateway.waitForVersion(feed.version);
    const text = await metrics();
    expect(text).not.toContain(`model="${ns}/one-slot"`);
    // No key or node address in the line's metrics.
    expect(text).not.toMatch(/pomona_gateway_queue_[^\n]*(127\.0\.0\.1|sk-pomona|[a-f0-9]{64})/);
  });
});
