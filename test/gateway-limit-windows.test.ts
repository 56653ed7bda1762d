// The sliding windows of the request and token limits, on the limiters themselves (in memory, and in a real
// redis-server): no 2× at a window edge, no more than the limit in any window-length span of random traffic,
// at least 98 % of a token limit for sustained traffic, refunds, and a Retry-After that is exact. The clock
// is injected (admissions carry their own time), so minutes and days pass without sleeping.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayPolicy } from "../crds/api/index.ts";
import { type Admission, type Limiter, MINUTE_MS, type Ticket } from "../gateway/limits/limiter.ts";
import { MemoryLimiter } from "../gateway/limits/memory-limiter.ts";
import { RedisLimiter } from "../gateway/limits/redis-limiter.ts";
import { createMetrics } from "../gateway/metrics.ts";
import { type Charge, mostInAnySpan, random } from "./support/limit-traffic.ts";
import { startRedis, type TestRedis } from "./support/redis.ts";

const DAY_MS = 86_400_000;
/** A minute boundary far from the start of a day. */
const BOUNDARY = Date.UTC(2026, 0, 1, 12, 0);

const policy = (name: string, limits: Partial<GatewayPolicy>): GatewayPolicy => ({
  namespace: "w",
  name,
  scope: "PerKey",
  ...limits,
});

let redis: TestRedis;
let run = 0;
const limiters: [string, () => Limiter][] = [
  ["in memory", () => new MemoryLimiter()],
  [
    "in Redis",
    () => new RedisLimiter({ url: redis.url, onFailure: "deny", metrics: createMetrics(), prefix: `w${run++}:` }),
  ],
];

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  await redis?.stop();
});

describe.each(limiters)("sliding windows kept %s", (_name, makeLimiter) => {
  let limiter: Limiter;
  let id = 0;

  beforeAll(async () => {
    limiter = makeLimiter();
    if (limiter instanceof RedisLimiter) expect(await limiter.connected(10_000)).toBe(true);
  });

  afterAll(async () => {
    await limiter?.close();
  });

  const admit = (p: GatewayPolicy, counterKey: string, tokens: number, nowMs: number) => {
    const admission: Admission = { requestId: `r${id++}`, checks: [{ policy: p, counterKey }], tokens, nowMs };
    return limiter.admit(admission);
  };

  /** Admits requests of `tokens` at `nowMs` until one is refused; returns how many got in. */
  async function fill(p: GatewayPolicy, counterKey: string, tokens: number, nowMs: number): Promise<number> {
    for (let admitted = 0; ; admitted++) {
      const result = await admit(p, counterKey, tokens, nowMs);
      if (!result.ok) return admitted;
      await limiter.finish(result.ticket, undefined);
    }
  }

  it("a token limit spent just before a minute boundary is still spent just after it (no 2× at the edge)", async () => {
    const tpm = policy("tpm", { tokensPerMinute: 1_000 });
    expect(await fill(tpm, "edge-tokens", 100, BOUNDARY - 200)).toBe(10);
    // A fixed minute window would start afresh here and admit another 1,000.
    expect(await fill(tpm, "edge-tokens", 100, BOUNDARY + 200)).toBe(0);
    expect(await fill(tpm, "edge-tokens", 100, BOUNDARY + MINUTE_MS - 300)).toBe(0);
    // Once the tokens are a full minute (and one slice) old they count no more.
    expect(await fill(tpm, "edge-tokens", 100, BOUNDARY + MINUTE_MS + 500)).toBe(10);
  });

  it("requests per minute without a burst: the same at the edge", async () => {
    const rpm = policy("rpm", { requestsPerMinute: 10 });
    expect(await fill(rpm, "edge-requests", 1, BOUNDARY - 100)).toBe(10);
    expect(await fill(rpm, "edge-requests", 1, BOUNDARY + 100)).toBe(0);
    // A bucket of 10 refilled at 10 a minute would hold 5 again here: 15 in one minute.
    expect(await fill(rpm, "edge-requests", 1, BOUNDARY + 30_000)).toBe(0);
    expect(await fill(rpm, "edge-requests", 1, BOUNDARY + MINUTE_MS + 500)).toBe(10);
  });

  it("burst: that many at once, then the per-minute pace, and never more than max(rpm, burst) in a minute", async () => {
    const paced = policy("paced", { requestsPerMinute: 60, burst: 3 });
    expect(await fill(paced, "burst-paced", 1, BOUNDARY)).toBe(3);
    expect(await fill(paced, "burst-paced", 1, BOUNDARY + 1_000)).toBe(1);
    // Paced at one a second for a minute: the window, not the bucket, stops the 61st.
    let admitted = 4;
    for (let s = 2; s < 60; s++) admitted += await fill(paced, "burst-paced", 1, BOUNDARY + s * 1_000);
    expect(admitted).toBe(60);
    const big = policy("big-burst", { requestsPerMinute: 1, burst: 20 });
    expect(await fill(big, "burst-big", 1, BOUNDARY)).toBe(20);
    expect(await fill(big, "burst-big", 1, BOUNDARY + 30_000)).toBe(0);
  });

  it("random traffic never gets more than the limit into any window-length span", async () => {
    const limits = { tokensPerMinute: 2_000, requestsPerMinute: 40, tokensPerDay: 200_000 };
    const p = policy("mixed", limits);
    const next = random(12);
    const tokens: Charge[] = [];
    const requests: Charge[] = [];
    const open: { ticket: Ticket; charge: Charge; endsAt: number }[] = [];
    let now = BOUNDARY - 7 * MINUTE_MS;
    // Thirty hours of bursts and pauses, with jumps of up to three minutes.
    while (now < BOUNDARY + 30 * 3_600_000) {
      now += next() < 0.7 ? Math.floor(next() * 2_000) : Math.floor(next() * 180_000);
      for (const o of open.filter((o) => o.endsAt <= now)) {
        open.splice(open.indexOf(o), 1);
        const usage = next() < 0.1 ? undefined : Math.floor(next() * (o.charge.amount + 1));
        if (usage !== undefined) o.charge.amount = usage;
        await limiter.finish(o.ticket, usage);
      }
      // Mostly one request; now and then a volley of up to 40 at the same instant.
      const volley = next() < 0.3 ? 1 + Math.floor(next() * 40) : 1;
      for (let i = 0; i < volley; i++) {
        const reserve = next() < 0.5 ? 1 + Math.floor(next() * 20) : 20 + Math.floor(next() * 300);
        const result = await admit(p, "random", reserve, now);
        if (!result.ok) continue;
        const charge = { at: now, amount: reserve };
        tokens.push(charge);
        requests.push({ at: now, amount: 1 });
        open.push({ ticket: result.ticket, charge, endsAt: now + Math.floor(next() * 5_000) });
      }
    }
    // Every limit was reached at some point (so each was tested), none passed.
    expect(requests.length).toBeGreaterThan(2_000);
    expect(mostInAnySpan(requests, MINUTE_MS)).toBe(limits.requestsPerMinute);
    expect(mostInAnySpan(tokens, MINUTE_MS)).toBeLessThanOrEqual(limits.tokensPerMinute);
    expect(mostInAnySpan(tokens, MINUTE_MS)).toBeGreaterThan(limits.tokensPerMinute * 0.8);
    expect(mostInAnySpan(tokens, DAY_MS)).toBeLessThanOrEqual(limits.tokensPerDay);
    expect(mostInAnySpan(tokens, DAY_MS)).toBeGreaterThan(limits.tokensPerDay * 0.9);
  });

  it("sustained traffic gets at least 98 % of a token limit, and never more than the limit in a minute", async () => {
    const tpm = 20_000;
    const p = policy("sustained", { tokensPerMinute: tpm });
    const next = random(7);
    const charges: Charge[] = [];
    const open: { ticket: Ticket; charge: Charge; endsAt: number }[] = [];
    // A client with more demand than the limit: a new request every 100 ms, each reserving prompt +
    // max_tokens (50 to 350), running 1 to 3 s, and using up to 20 tokens less than it reserved.
    const start = BOUNDARY + 17_250;
    for (let now = start; now < start + 7 * MINUTE_MS; now += 100) {
      for (const o of open.filter((o) => o.endsAt <= now)) {
        open.splice(open.indexOf(o), 1);
        o.charge.amount -= Math.floor(next() * 21);
        await limiter.finish(o.ticket, o.charge.amount);
      }
      const reserve = 50 + Math.floor(next() * 301);
      const result = await admit(p, "sustained", reserve, now);
      if (!result.ok) continue;
      const charge = { at: now, amount: reserve };
      charges.push(charge);
      open.push({ ticket: result.ticket, charge, endsAt: now + 1_000 + Math.floor(next() * 2_000) });
    }
    // Steady state: the six minutes after the first.
    const steady = charges.filter((c) => c.at >= start + MINUTE_MS).reduce((sum, c) => sum + c.amount, 0);
    const share = steady / (6 * tpm);
    expect(share).toBeGreaterThanOrEqual(0.98);
    expect(share).toBeLessThanOrEqual(1);
    expect(mostInAnySpan(charges, MINUTE_MS)).toBeLessThanOrEqual(tpm);
  });

  it("refunds: settling below the reservation gives tokens back at once; unknown usage keeps the reservation", async () => {
    const p = policy("refunds", { tokensPerMinute: 100 });
    const first = await admit(p, "refunds", 80, BOUNDARY);
    expect(first.ok).toBe(true);
    expect((await admit(p, "refunds", 30, BOUNDARY + 10)).ok).toBe(false);
    await limiter.finish((first as { ticket: Ticket }).ticket, 10);
    const second = await admit(p, "refunds", 90, BOUNDARY + 20);
    expect(second.ok).toBe(true);
    await limiter.finish((second as { ticket: Ticket }).ticket, undefined);
    expect((await admit(p, "refunds", 1, BOUNDARY + 30)).ok).toBe(false);
  });

  it("a refund that arrives after its tokens left the window gives nothing back", async () => {
    const p = policy("late", { tokensPerMinute: 100 });
    const early = await admit(p, "late", 100, BOUNDARY);
    expect(early.ok).toBe(true);
    const later = BOUNDARY + MINUTE_MS + 1_000;
    expect((await admit(p, "late", 100, later)).ok).toBe(true);
    await limiter.finish((early as { ticket: Ticket }).ticket, 0);
    expect((await admit(p, "late", 1, later)).ok).toBe(false);
  });

  it("Retry-After is exact: refused a millisecond before it, admitted at it", async () => {
    const p = policy("retry", { tokensPerMinute: 300 });
    for (const [offset, tokens] of [
      [0, 100],
      [20_000, 100],
      [40_000, 100],
    ] as const) {
      expect((await admit(p, "retry", tokens, BOUNDARY + offset)).ok).toBe(true);
    }
    const refused = await admit(p, "retry", 100, BOUNDARY + 50_000);
    if (refused.ok) throw new Error("admitted over the limit");
    expect(refused.rejection.limit).toBe("tokens_per_minute");
    // The oldest 100 leave when their slice is a full minute old: 60.5 s after BOUNDARY, 10.5 s from now.
    expect(refused.rejection.retryAfterMs).toBe(10_500);
    expect((await admit(p, "retry", 100, BOUNDARY + 50_000 + 10_499)).ok).toBe(false);
    expect((await admit(p, "retry", 100, BOUNDARY + 50_000 + 10_500)).ok).toBe(true);
    // Needing two slices to leave: the second one's end, a minute later.
    const twoSlices = await admit(p, "retry", 200, BOUNDARY + 60_500);
    if (twoSlices.ok) throw new Error("admitted over the limit");
    expect(twoSlices.rejection.retryAfterMs).toBe(40_500 - 60_500 + MINUTE_MS);
  });

  it("tokens per day slide over 24 hours: no fresh budget at midnight", async () => {
    const p = policy("day", { tokensPerDay: 1_000 });
    const midnight = Date.UTC(2026, 0, 2);
    expect(await fill(p, "day", 250, midnight - 3_600_000)).toBe(4);
    expect(await fill(p, "day", 250, midnight + 3_600_000)).toBe(0);
    const refused = await admit(p, "day", 250, midnight + 3_600_000);
    if (refused.ok) throw new Error("admitted over the limit");
    // Back 24 hours (and at most one 12-minute slice) after they were spent.
    expect(refused.rejection.retryAfterMs).toBeGreaterThan(22 * 3_600_000);
    expect(refused.rejection.retryAfterMs).toBeLessThanOrEqual(22 * 3_600_000 + 720_000);
    expect(await fill(p, "day", 250, midnight + 3_600_000 + refused.rejection.retryAfterMs)).toBe(4);
  });
});
