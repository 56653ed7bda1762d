// A busy fleet with real inference: the real node-agent (virtual mode) serves the stories model with real
// llama.cpp, with 2 parallel sequences and a node queue of 2, behind real gateways. The gateway sends the
// replica at most its 2 slots; everything else waits in the gateway's line, which is fair across keys and
// serves interactive keys before batch keys. Clients are plain fetch, to see every status and header.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeKey, policy, type TestGateway } from "./support/gateway.ts";
import { type InferenceStack, SEQUENCES, startInferenceStack } from "./support/inference-stack.ts";
import { eventually } from "./support/processes.ts";

const ns = "gw-overload";
const NODE_QUEUE = 2;
// Every key's policy allows far more than the test sends: only the model's capacity limits it.
const roomy = policy(ns, "roomy", { concurrentRequests: 1_000, requestsPerMinute: 100_000, scope: "PerKey" });
const bulk = policy(ns, "bulk", {
  concurrentRequests: 1_000,
  requestsPerMinute: 100_000,
  scope: "PerKey",
  priorityClass: "batch",
});
const flood = makeKey(ns, "flood", { rateLimitPolicy: "roomy" });
const heavy = makeKey(ns, "heavy", { rateLimitPolicy: "roomy" });
const light = makeKey(ns, "light", { rateLimitPolicy: "roomy" });
const batch = makeKey(ns, "batch", { rateLimitPolicy: "bulk" });
let stack: InferenceStack;
/** Line of 4 per model, 3 s deadline: small, so saturation overflows it. */
let saturated: TestGateway;
/** A roomy line and a long deadline, for fairness and priority. */
let roomyGateway: TestGateway;

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  ms: number;
}

async function call(
  gateway: TestGateway,
  secret: string,
  body: Record<string, unknown>,
  path = "/v1/chat/completions",
  signal?: AbortSignal,
): Promise<Answer> {
  const started = performance.now();
  const res = await fetch(`${gateway.url}${path}`, {
    method: "POST",
    signal,
    headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, ms: performance.now() - started };
}

const chat = (modelName: string, maxTokens: number, stream = false) => ({
  model: modelName,
  messages: [{ role: "user", content: "Once upon a time there was a little dog" }],
  max_tokens: maxTokens,
  temperature: 0,
  seed: 1,
  ...(stream ? { stream: true } : {}),
});

const metricsOf = async (gateway: TestGateway) => (await fetch(`${gateway.adminUrl}/metrics`)).text();
const queueLength = async (gateway: TestGateway, modelName: string) =>
  Number(
    new RegExp(`pomona_gateway_queue_length\\{model="${ns}/${modelName}"\\} (\\d+)`).exec(
      await metricsOf(gateway),
    )?.[1] ?? 0,
  );
/** Polls often: in the priority test, the request in service must still be generating when the line fills. */
async function waitForQueue(gateway: TestGateway, modelName: string, atLeast: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await queueLength(gateway, modelName)) < atLeast) {
    if (Date.now() > deadline) throw new Error(`fewer than ${atLeast} waiting for ${modelName}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A whole, well-formed answer: JSON with a finish reason, or a stream that ends with [DONE] and has no error. */
function expectComplete(answer: Answer, stream: boolean): void {
  if (stream) {
    expect(answer.text).not.toContain('"error"');
    expect(answer.text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(answer.text).toMatch(/"finish_reason":"(stop|length)"/);
  } else {
    const body = JSON.parse(answer.text);
    expect(typeof body.choices[0].message.content).toBe("string");
    expect(["stop", "length"]).toContain(body.choices[0].finish_reason);
  }
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
};

beforeAll(async () => {
  stack = await startInferenceStack(ns, {
    keys: [flood, heavy, light, batch],
    policies: [roomy, bulk],
    nodeQueueLimit: NODE_QUEUE,
    gateways: [{ queue: { timeoutMs: 3_000, maxPerModel: 4 } }, { queue: { timeoutMs: 60_000, maxPerModel: 256 } }],
    // The same replica, one request at a time: service order is then completion order.
    moreModels: [{ name: "stories-one", slots: 1 }],
  });
  [saturated, roomyGateway] = stack.gateways as [TestGateway, TestGateway];
}, 300_000);

afterAll(async () => {
  await stack?.stop();
});

describe("a saturated replica", () => {
  it("answers 3× its capacity of simultaneous requests with 200 or 429/503 with Retry-After, never 502/504, and its breaker stays closed", async () => {
    const total = 3 * (SEQUENCES + NODE_QUEUE);
    const answers = await Promise.all(
      Array.from({ length: total }, async (_, i) => {
        const stream = i % 2 === 0;
        return { stream, answer: await call(saturated, flood.secret, chat("stories", 200, stream)) };
      }),
    );
    const statuses = answers.map((a) => a.answer.status);
    for (const { stream, answer } of answers) {
      expect([200, 429, 503]).toContain(answer.status);
      if (answer.status === 200) {
        // Every admitted request completes.
        expectComplete(answer, stream);
      } else {
        expect(Number(answer.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
        expect(JSON.parse(answer.text).error.code).toBe(
          answer.status === 429 ? "model_queue_full" : "no_replica_available",
        );
      }
    }
    // The line of 4 overflowed (12 at once, 2 slots), and the slots and the line were served.
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(SEQUENCES);
    const metrics = await metricsOf(saturated);
    expect(metrics).toMatch(/pomona_gateway_breaker_state\{model="gw-overload\/stories",[^}]*\} 0/);
    expect(metrics).not.toMatch(/pomona_gateway_upstream_attempts_total\{model="stories",outcome="(failed|busy)"\}/);
    expect(metrics).toMatch(
      /pomona_gateway_queue_wait_seconds_count\{model="gw-overload\/stories",priority="interactive",outcome="full"\} [1-9]/,
    );
  });
});

describe("fairness and priority in the line", () => {
  it("serves a light key's requests within twice an idle request's time while a heavy key sends 10× its share", async () => {
    // Long enough that an answer's time is generation, not HTTP and scheduling noise.
    const body = chat("stories", 200);
    // Rounds, each bracketed by a request on the idle replica just before and just after it: a light key's
    // waits are compared with the idle time of their own round (the mean of its two brackets), because
    // other work on this shared machine changes the speed of everything from minute to minute, and waits
    // compared with idle times taken a minute apart measured that drift, not the line.
    const ROUNDS = 4;
    const LIGHT_PER_ROUND = 3;
    const idleRequest = async () => {
      const a = await call(roomyGateway, light.secret, body);
      expect(a.status).toBe(200);
      return a.ms;
    };
    const heavyStatuses: number[] = [];
    const heavyMs: number[] = [];
    const heavyWaits: number[] = [];
    const lightStatuses: number[] = [];
    /** Per round: the light key's waits in the line (x-pomona-queue-ms: the wait the test is about). */
    const waitsByRound: number[][] = [];
    const idle = [await idleRequest()];
    for (let round = 0; round < ROUNDS; round++) {
      // Two keys, two slots: each key's share is one slot; the heavy key keeps 10× that in flight.
      const stop = new AbortController();
      const heavyWorker = async () => {
        while (!stop.signal.aborted) {
          const a = await call(roomyGateway, heavy.secret, body, undefined, stop.signal).catch((err: Error) => {
            if (stop.signal.aborted) return undefined;
            throw err;
          });
          if (!a) return;
          heavyStatuses.push(a.status);
          heavyMs.push(a.ms - Number(a.headers.get("x-pomona-queue-ms")));
          heavyWaits.push(Number(a.headers.get("x-pomona-queue-ms")));
        }
      };
      const heavyWorkers = Array.from({ length: 10 * (SEQUENCES / 2) }, heavyWorker);
      await waitForQueue(roomyGateway, "stories", 10 * (SEQUENCES / 2) - SEQUENCES);
      const waits: number[] = [];
      for (let i = 0; i < LIGHT_PER_ROUND; i++) {
        const a = await call(roomyGateway, light.secret, body);
        lightStatuses.push(a.status);
        waits.push(Number(a.headers.get("x-pomona-queue-ms")));
      }
      waitsByRound.push(waits);
      // The flood's requests go (their generations stop with them), so the next bracket is on an idle replica.
      stop.abort();
      await Promise.all(heavyWorkers);
      await eventually("the gateway with nothing in flight", async () =>
        /pomona_gateway_requests_in_flight 0\b/.test(await metricsOf(roomyGateway)) ? true : undefined,
      );
      idle.push(await idleRequest());
    }
    const idleOfRound = (round: number) => ((idle[round] ?? 0) + (idle[round + 1] ?? 0)) / 2;
    const waitRatios = waitsByRound.flatMap((waits, round) => waits.map((w) => w / idleOfRound(round)));
    console.log(
      `fairness: idle requests ${idle.map((ms) => ms.toFixed(0)).join(", ")} ms; heavy requests ${heavyStatuses.length}, served in ${percentile(heavyMs, 50).toFixed(0)} ms (median, without waiting); light key's waits in the line by round (ms): ${waitsByRound.map((w) => w.join(", ")).join(" | ")}`,
    );
    expect(lightStatuses).toEqual(Array(ROUNDS * LIGHT_PER_ROUND).fill(200));
    expect(heavyStatuses.every((s) => s === 200)).toBe(true);
    // The model was saturated (the heavy key's requests waited in the line), yet the light key waited no
    // longer than two idle requests.
    expect(Math.max(...heavyWaits)).toBeGreaterThan(0);
    expect(percentile(waitRatios, 99)).toBeLessThan(2);
  });

  it("serves interactive keys before a batch key that came first", async () => {
    // The longest answer the replica's sequence can give, so it is still generating while the line fills.
    const inService = call(roomyGateway, light.secret, { ...chat("stories-one", 220), temperature: 1, seed: 7 });
    while (!/pomona_gateway_requests_in_flight 1\b/.test(await metricsOf(roomyGateway))) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const order: string[] = [];
    const track = (who: string, p: Promise<Answer>) =>
      p.then((a) => {
        order.push(who);
        return a;
      });
    const batchAnswer = track("batch", call(roomyGateway, batch.secret, chat("stories-one", 16)));
    await waitForQueue(roomyGateway, "stories-one", 1);
    const first = track("interactive", call(roomyGateway, light.secret, chat("stories-one", 16)));
    await waitForQueue(roomyGateway, "stories-one", 2);
    const second = track("interactive", call(roomyGateway, heavy.secret, chat("stories-one", 16)));
    await waitForQueue(roomyGateway, "stories-one", 3);
    const answers = await Promise.all([inService, batchAnswer, first, second]);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200]);
    // One slot: answers end in the order they were served.
    expect(order).toEqual(["interactive", "interactive", "batch"]);
    expect(Number((await batchAnswer).headers.get("x-pomona-queue-ms"))).toBeGreaterThan(
      Number((await first).headers.get("x-pomona-queue-ms")),
    );
  });
});
