// The node-agent's side of the gateway↔node contract (docs/node-contract.md), seen through the gateway,
// with the real node-agent and real llama.cpp: headers at admission (so a long non-streamed answer is not
// cut by the first-byte timeout), and a busy answer (429 with Retry-After) when the node's sequences and
// queue are full of other clients' requests — here sent straight to the node, standing for other
// gateway replicas. test/gateway-busy.test.ts proves the gateway's side against a fake node.
// Against a node-agent without its side of the contract (headers only with the whole answer, a full queue
// answered 503 without Retry-After) the first gets 504 and the second sees no 429 from the node.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeKey } from "./support/gateway.ts";
import { type InferenceStack, SEQUENCES, startInferenceStack } from "./support/inference-stack.ts";
import { NODE_AGENT_TOKEN } from "./support/node-agent.ts";

const ns = "gw-node-contract";
const NODE_QUEUE = 2;
const FIRST_BYTE_TIMEOUT_MS = 200;
const key = makeKey(ns, "k");
let stack: InferenceStack;

const body = (maxTokens: number) => ({
  model: "stories",
  messages: [{ role: "user", content: "Once upon a time there was a little dog" }],
  max_tokens: maxTokens,
});

/** Other clients of the node (other gateway replicas): long answers sent straight to the replica. */
const direct = (n: number) =>
  Array.from({ length: n }, () =>
    fetch(`${stack.endpoint}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${NODE_AGENT_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ ...body(220), temperature: 1 }),
    }).then(async (r) => {
      await r.text();
      return r.status;
    }),
  );

async function viaGateway() {
  const started = performance.now();
  const res = await fetch(`${stack.gateway.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key.secret}`, "content-type": "application/json" },
    body: JSON.stringify(body(220)),
  });
  return { status: res.status, headers: res.headers, text: await res.text(), ms: performance.now() - started };
}

beforeAll(async () => {
  stack = await startInferenceStack(ns, {
    keys: [key],
    sequenceContextSize: 512 / SEQUENCES,
    nodeQueueLimit: NODE_QUEUE,
    gateways: [
      {
        upstream: { firstByteTimeoutMs: FIRST_BYTE_TIMEOUT_MS },
        queue: { timeoutMs: 30_000, maxPerModel: 64 },
      },
    ],
  });
}, 300_000);

afterAll(async () => {
  await stack?.stop();
});

describe("the node-agent's side of the contract, through the gateway", () => {
  it("completes a non-streamed answer that waits in the node's queue past the first-byte timeout", async () => {
    // Both sequences busy with other clients: the gateway's request is admitted into the node's queue.
    const others = direct(SEQUENCES);
    await new Promise((r) => setTimeout(r, 20));
    const answer = await viaGateway();
    await Promise.all(others);
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.text).choices[0].message.content.length).toBeGreaterThan(0);
    // The premise: the answer took longer than the first-byte timeout, so only early headers saved it.
    expect(answer.ms).toBeGreaterThan(FIRST_BYTE_TIMEOUT_MS);
  });

  it("hears busy, not failure, from a node whose sequences and queue are full of other clients' requests", async () => {
    const others = direct(3 * (SEQUENCES + NODE_QUEUE));
    await new Promise((r) => setTimeout(r, 20));
    const answers = await Promise.all([viaGateway(), viaGateway()]);
    const statuses = await Promise.all(others);
    // The node itself refused some of the direct requests as busy: it was saturated.
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    for (const a of answers) {
      expect([200, 503]).toContain(a.status);
      if (a.status === 503) expect(Number(a.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    }
    const metrics = await (await fetch(`${stack.gateway.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/pomona_gateway_breaker_state\{model="gw-node-contract\/stories",[^}]*\} 0/);
    expect(metrics).not.toMatch(/pomona_gateway_upstream_attempts_total\{model="stories",outcome="failed"\}/);
  });
});
