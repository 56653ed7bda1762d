// The in-memory limiter (one gateway) and the Redis limiter (shared, Lua) decide alike: random sequences
// of admissions, settlements and clock steps (small and large, now and then backwards) get the same
// answers, down to the Retry-After, from both. Redis is a real redis-server.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayPolicy } from "../crds/api/index.ts";
import type { Limiter, Ticket } from "../gateway/limits/limiter.ts";
import { MemoryLimiter } from "../gateway/limits/memory-limiter.ts";
import { RedisLimiter } from "../gateway/limits/redis-limiter.ts";
import { createMetrics } from "../gateway/metrics.ts";
import { startRedis, type TestRedis } from "./support/redis.ts";

const policies: GatewayPolicy[] = [
  // 600 a minute is one per 100 ms: clock steps of 100 ms refill whole requests, so no rounding differs.
  { namespace: "p", name: "rpm", scope: "PerKey", requestsPerMinute: 600, burst: 3 },
  { namespace: "p", name: "tokens", scope: "PerKey", tokensPerMinute: 100, tokensPerDay: 250 },
  { namespace: "p", name: "conc", scope: "PerKey", concurrentRequests: 2 },
  // No burst: only the sliding request window.
  { namespace: "p", name: "window", scope: "PerKey", requestsPerMinute: 4 },
  {
    namespace: "p",
    name: "all",
    scope: "PerKey",
    requestsPerMinute: 600,
    burst: 2,
    tokensPerMinute: 60,
    concurrentRequests: 3,
  },
];

type Step =
  | { kind: "admit"; policies: number[]; tokens: number }
  | { kind: "finish"; which: number; actual: number | null }
  | { kind: "wait"; steps: number }
  | { kind: "leap"; ms: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant("admit" as const),
    policies: fc.uniqueArray(fc.integer({ min: 0, max: policies.length - 1 }), { minLength: 1, maxLength: 2 }),
    tokens: fc.integer({ min: 1, max: 120 }),
  }),
  fc.record({
    kind: fc.constant("finish" as const),
    which: fc.nat(),
    actual: fc.option(fc.integer({ min: 0, max: 80 })),
  }),
  fc.record({ kind: fc.constant("wait" as const), steps: fc.integer({ min: 1, max: 700 }) }),
  // Hours at a time, so the day windows slide too, or back in time, as a clock set back by NTP would go;
  // whole 100 ms steps, so the bucket refills whole requests in both.
  fc.record({ kind: fc.constant("leap" as const), ms: fc.integer({ min: -900, max: 1_080_000 }).map((n) => n * 100) }),
);

async function play(limiter: Limiter, steps: Step[], run: number): Promise<string[]> {
  let now = Date.UTC(2026, 0, 1) + 1_000;
  const open: Ticket[] = [];
  const log: string[] = [];
  let id = 0;
  for (const s of steps) {
    if (s.kind === "wait") {
      now += s.steps * 100;
      continue;
    }
    if (s.kind === "leap") {
      // Requests do not run for hours: settle what is open first. (Redis also reclaims a concurrency slot
      // after its 15-minute lease, against a gateway that died holding it; one process has no such need.)
      for (const ticket of open.splice(0)) await limiter.finish(ticket, undefined);
      now += s.ms;
      continue;
    }
    if (s.kind === "finish") {
      const ticket = open.splice(s.which % Math.max(open.length, 1), 1)[0];
      if (ticket) await limiter.finish(ticket, s.actual ?? undefined);
      continue;
    }
    const checks = s.policies.map((i) => ({ policy: policies[i]!, counterKey: `run${run}|${policies[i]!.name}` }));
    const result = await limiter.admit({ requestId: `r${id++}`, checks, tokens: s.tokens, nowMs: now });
    if (result.ok) {
      open.push(result.ticket);
      log.push("admitted");
    } else {
      const { check, limit, retryAfterMs } = result.rejection;
      log.push(`refused:${check.policy.name}:${limit}:${retryAfterMs}`);
    }
  }
  return log;
}

let redis: TestRedis;
let shared: RedisLimiter;

beforeAll(async () => {
  redis = await startRedis();
  shared = new RedisLimiter({ url: redis.url, onFailure: "deny", metrics: createMetrics(), prefix: "parity:" });
  expect(await shared.connected(10_000)).toBe(true);
});

afterAll(async () => {
  await shared?.close();
  await redis?.stop();
});

describe("limiter parity", () => {
  it("the in-memory and Redis limiters give the same answers to the same sequence", async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 5, maxLength: 40 }), async (steps) => {
        run++;
        const inMemory = await play(new MemoryLimiter(), steps, run);
        const inRedis = await play(shared, steps, run);
        expect(inRedis).toEqual(inMemory);
      }),
      { numRuns: 150 },
    );
  });
});
