// How the gateway copes with nodes that fail: breakers, retries on another replica, fallbacks, timeouts,
// and a client that leaves mid-stream. Failing, hanging and dying nodes are the fake node
// (test/support/fake-node.ts): the faults are the point here.
import { request } from "node:http";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../controlplane/local-control-plane.ts";
import { FakeNode } from "./support/fake-node.ts";
import {
  ConfigFeed,
  createNamespace,
  makeKey,
  model,
  NODE_TOKEN,
  startGateway,
  type TestGateway,
} from "./support/gateway.ts";
import { eventually } from "./support/processes.ts";

const ns = "gw-resilience";
const a = new FakeNode({ name: "mac-a", token: NODE_TOKEN, answerDelayMs: 5 });
const b = new FakeNode({ name: "mac-b", token: NODE_TOKEN, answerDelayMs: 5 });
const backup = new FakeNode({ name: "mac-backup", token: NODE_TOKEN });
const failing = new FakeNode({ name: "mac-failing", token: NODE_TOKEN });
const hanging = new FakeNode({ name: "mac-hanging", token: NODE_TOKEN });
const slow = new FakeNode({ name: "mac-slow", token: NODE_TOKEN, streamTokens: 500, tokenDelayMs: 20 });
const slowWithoutCancel = new FakeNode({
  name: "mac-slow-old",
  token: NODE_TOKEN,
  streamTokens: 500,
  tokenDelayMs: 20,
  cancelById: false,
});
const bulky = new FakeNode({
  name: "mac-bulky",
  token: NODE_TOKEN,
  streamTokens: 2_000,
  chunkChars: 16_384,
  respectBackpressure: true,
});
const picky = new FakeNode({ name: "mac-picky", token: NODE_TOKEN });
const key = makeKey(ns, "k");
const primaryOnly = makeKey(ns, "primary-only", { models: ["primary"] });
let gateway: TestGateway;
let deadUrl: string;

const client = () => new OpenAI({ apiKey: key.secret, baseURL: `${gateway.url}/v1`, maxRetries: 0 });
/** A stream the client leaves after its third chunk. */
async function leaveMidStream(modelName: string): Promise<void> {
  const controller = new AbortController();
  const stream = await client().chat.completions.create(
    { model: modelName, messages: [{ role: "user", content: "tell me a long story" }], stream: true },
    { signal: controller.signal },
  );
  let received = 0;
  try {
    for await (const _chunk of stream) if (++received === 3) controller.abort();
  } catch {
    // The client's own abort.
  }
}
const chat = (modelName: string) =>
  client().chat.completions.create({ model: modelName, messages: [{ role: "user", content: "hi" }] });

beforeAll(async () => {
  await createNamespace(ns);
  for (const n of [a, b, backup, failing, hanging, slow, slowWithoutCancel, bulky, picky]) await n.start();
  picky.mode = "reject";
  failing.mode = "fail";
  hanging.mode = "hang";
  deadUrl = `http://127.0.0.1:${await freePort()}/replicas/${ns}/gone`;
  gateway = await startGateway(ns, { upstream: { firstByteTimeoutMs: 500, breakerResetMs: 1_000 } });
  const feed = new ConfigFeed(ns);
  await feed.publish({
    models: [
      model(ns, "tiny", { endpoints: [a.endpoint(ns, "tiny-a"), b.endpoint(ns, "tiny-b")] }),
      model(ns, "primary", {
        endpoints: [
          { url: deadUrl, replica: "gone", node: "mac-gone", weight: 1, slots: 64 },
          failing.endpoint(ns, "p-f"),
        ],
        fallbacks: ["backup"],
      }),
      model(ns, "backup", { endpoints: [backup.endpoint(ns, "backup-a")] }),
      model(ns, "unplaced"),
      model(ns, "broken", { endpoints: [failing.endpoint(ns, "broken-a")] }),
      model(ns, "stuck", { endpoints: [hanging.endpoint(ns, "stuck-a")] }),
      model(ns, "slow", { endpoints: [slow.endpoint(ns, "slow-a")] }),
      model(ns, "slow-old", { endpoints: [slowWithoutCancel.endpoint(ns, "slow-old-a")] }),
      model(ns, "bulky", { endpoints: [bulky.endpoint(ns, "bulky-a")] }),
      model(ns, "picky", { endpoints: [picky.endpoint(ns, "picky-a")] }),
      model(ns, "half-broken", { endpoints: [failing.endpoint(ns, "hb-f"), b.endpoint(ns, "hb-b")] }),
    ],
    keys: [key, primaryOnly],
  });
  await gateway.waitForVersion(feed.version);
});

afterAll(async () => {
  await gateway?.close();
  for (const n of [a, b, backup, failing, hanging, slow, slowWithoutCancel, bulky, picky]) await n.kill();
});

describe("nodes failing", () => {
  it("moves traffic off a node killed mid-traffic without failing a request, and its breaker opens", async () => {
    const total = 300;
    let done = 0;
    let killed = false;
    const failures: unknown[] = [];
    const answeredBy: string[] = [];
    const worker = async () => {
      while (done + failures.length < total) {
        try {
          const answer = await chat("tiny");
          answeredBy.push(answer.choices[0]?.message.content ?? "");
          done++;
        } catch (err) {
          failures.push(err);
        }
        if (done >= 60 && !killed) {
          killed = true;
          await a.kill();
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    expect(failures).toEqual([]);
    expect(done).toBeGreaterThanOrEqual(total);
    expect(answeredBy.slice(0, 40)).toContain("from mac-a");
    // Once the breaker opened, node a gets no more traffic: the last answers all come from b.
    expect(answeredBy.slice(-50).every((who) => who === "from mac-b")).toBe(true);
    const metrics = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
    // Open, or half-open if its reset time passed since: not closed.
    expect(metrics).toMatch(
      /pomona_gateway_breaker_state\{model="gw-resilience\/tiny",replica="tiny-a",node="mac-a"\} [12]/,
    );
    // Without a breaker, about half of the 240 requests after the kill would try node a first and fail.
    const failed = Number(
      /pomona_gateway_upstream_attempts_total\{model="tiny",outcome="failed"\} (\d+)/.exec(metrics)?.[1],
    );
    expect(failed).toBeGreaterThan(0);
    expect(failed).toBeLessThan(80);
  });

  it("probes a node again after the breaker's reset time and sends it traffic when it is back", async () => {
    await a.start(a.port);
    const back = await eventually(
      "node a serving again",
      async () => {
        const answers = await Promise.all(Array.from({ length: 6 }, () => chat("tiny")));
        return answers.some((x) => x.choices[0]?.message.content === "from mac-a") ? true : undefined;
      },
      20_000,
    );
    expect(back).toBe(true);
  });

  it("retries a stream on another replica when the first fails before the first byte", async () => {
    for (let i = 0; i < 6; i++) {
      const stream = await client().chat.completions.create({
        model: "half-broken",
        messages: [{ role: "user", content: `question ${i}` }],
        stream: true,
      });
      let text = "";
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
      expect(text).toBe("tok0 tok1 tok2");
    }
  });

  it("answers from the fallback model when no replica of the model can serve", async () => {
    const { data, response } = await client()
      .chat.completions.create({ model: "primary", messages: [{ role: "user", content: "hi" }] })
      .withResponse();
    expect(data.choices[0]?.message.content).toBe("from mac-backup");
    expect(data.model).toBe("backup");
    expect(response.headers.get("x-pomona-model")).toBe("backup");
    expect(backup.seen.at(-1)?.body.model).toBe("backup");
  });

  it("never falls back to a model the key may not use", async () => {
    const seenBefore = backup.seen.length;
    const err = await new OpenAI({
      apiKey: primaryOnly.secret,
      baseURL: `${gateway.url}/v1`,
      maxRetries: 0,
    }).chat.completions
      .create({ model: "primary", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    // 502 while the failing replicas are still tried, 503 once their breakers are open: never the backup's answer.
    expect([502, 503]).toContain((err as InstanceType<typeof OpenAI.APIError>).status);
    expect(backup.seen.length).toBe(seenBefore);
  });

  it("answers 503 when nothing can serve, 502 when every replica fails, 504 when none answers in time", async () => {
    const unplaced = await chat("unplaced").catch((e: unknown) => e);
    expect(unplaced).toBeInstanceOf(OpenAI.APIError);
    expect((unplaced as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    expect((unplaced as InstanceType<typeof OpenAI.APIError>).code).toBe("no_replica_available");
    const broken = await chat("broken").catch((e: unknown) => e);
    expect((broken as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
    const stuck = await chat("stuck").catch((e: unknown) => e);
    expect((stuck as InstanceType<typeof OpenAI.APIError>).status).toBe(504);
    // Error messages name models, never node addresses or tokens.
    for (const e of [unplaced, broken, stuck]) {
      expect((e as Error).message).not.toContain("127.0.0.1");
      expect((e as Error).message).not.toContain(NODE_TOKEN);
    }
  });

  it("passes a node's refusal of the request on as the client's 400, without counting it against the node", async () => {
    for (let i = 0; i < 6; i++) {
      const err = await chat("picky").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.BadRequestError);
      expect((err as Error).message).toContain("longer than the context");
      expect((err as InstanceType<typeof OpenAI.APIError>).param).toBe("messages");
    }
    const metrics = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/pomona_gateway_breaker_state\{model="gw-resilience\/picky",[^}]*\} 0/);
    expect(picky.seen).toHaveLength(6);
  });

  it("stops the node's generation when the client leaves mid-stream", async () => {
    await leaveMidStream("slow");
    await eventually(
      "the node to see the stream aborted",
      async () => (slow.streamsAborted === 1 ? true : undefined),
      10_000,
    );
    const written = slow.chunksWritten;
    await new Promise((r) => setTimeout(r, 300));
    expect(slow.chunksWritten).toBe(written);
    expect(written).toBeLessThan(100);
    expect(slow.streamsFinished).toBe(0);
    // Stopped by a cancel on the node, not by closing the gateway's connection to it.
    expect(slow.cancels).toBe(1);
    const metrics = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/pomona_gateway_requests_in_flight 0/);
  });

  it("closes the connection of a node that does not acknowledge the cancel, which stops it at once", async () => {
    await leaveMidStream("slow-old");
    await eventually("the node to see the stream aborted", async () =>
      slowWithoutCancel.streamsAborted === 1 ? true : undefined,
    );
    expect(slowWithoutCancel.cancels).toBe(0);
    // Waiting out the 2-s grace instead would have let it write about 100 chunks (one per 20 ms).
    expect(slowWithoutCancel.chunksWritten).toBeLessThan(50);
  });

  it("streams with backpressure: a client that stops reading stops the node, and gets everything when it reads", async () => {
    // 2,000 chunks of 16 KiB: about 32 MiB, far more than the socket buffers between the three.
    const body = JSON.stringify({ model: "bulky", messages: [{ role: "user", content: "hi" }], stream: true });
    const { port } = new URL(gateway.url);
    const res = await new Promise<import("node:http").IncomingMessage>((resolve, reject) => {
      const req = request(
        {
          host: "127.0.0.1",
          port,
          path: "/v1/chat/completions",
          method: "POST",
          headers: { authorization: `Bearer ${key.secret}`, "content-type": "application/json" },
        },
        resolve,
      );
      req.on("error", reject);
      req.end(body);
    });
    expect(res.statusCode).toBe(200);
    res.pause();
    // The client reads nothing: the node must stall long before its end.
    await new Promise((r) => setTimeout(r, 1_000));
    const stalledAt = bulky.chunksWritten;
    await new Promise((r) => setTimeout(r, 500));
    expect(bulky.chunksWritten).toBe(stalledAt);
    expect(stalledAt).toBeLessThan(1_000);
    let text = "";
    res.setEncoding("utf8");
    for await (const c of res) text += c;
    expect(text.match(/^data: \{/gm)).toHaveLength(2_001); // 2,000 tokens and the finishing chunk
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(bulky.streamsFinished).toBe(1);
  });
});
