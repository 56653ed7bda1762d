// Leased budget (gateway/limits/leases.ts) with two gateways' limiters sharing one real redis-server:
// together they never admit more than a limit in any window-length span nor run more than the concurrency
// limit at once, sustained traffic still gets ≥ 98 % of a token limit, a limit too small to lease stays
// exact, and with Redis gone a lease serves out its slice before the failure mode applies as before. The
// clock is injected (admissions carry their own time), so minutes pass without sleeping; the next round
// trip of a counter gives back what its previous slice left, so only the concurrency test waits (by
// polling) on the sweep, for the slots held in blocks to come back.
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayPolicy } from "../crds/api/index.ts";
import { type Admission, MINUTE_MS, MINUTE_SLICE_MS, type Ticket } from "../gateway/limits/limiter.ts";
import { LimitsUnavailable, RedisLimiter } from "../gateway/limits/redis-limiter.ts";
import { createMetrics } from "../gateway/metrics.ts";
import { type Charge, mostInAnySpan, random } from "./support/limit-traffic.ts";
import { eventually } from "./support/processes.ts";
import { startRedis, type TestRedis } from "./support/redis.ts";

const DAY_MS = 86_400_000;
const START = Date.UTC(2026, 0, 1, 12, 0) + 17_250;

let redis: TestRedis;
let client: Redis;
let run = 0;
const open: RedisLimiter[] = [];

/** Two gateways' limiters on one Redis, under a prefix of their own. */
async function twoGateways(): Promise<[RedisLimiter, RedisLimiter]> {
  const prefix = `lease${run++}:`;
  const make = () => new RedisLimiter({ url: redis.url, onFailure: "deny", metrics: createMetrics(), prefix });
  const pair: [RedisLimiter, RedisLimiter] = [make(), make()];
  open.push(...pair);
  for (const l of pair) expect(await l.connected(10_000)).toBe(true);
  return pair;
}

const policy = (name: string, limits: Partial<GatewayPolicy>): GatewayPolicy => ({
  namespace: "l",
  name,
  scope: "PerKey",
  ...limits,
});

let id = 0;
const admission = (p: GatewayPolicy, tokens: number, nowMs: number): Admission => ({
  requestId: `r${id++}`,
  checks: [{ policy: p, counterKey: p.name }],
  tokens,
  nowMs,
});

/** Script calls Redis has run since the last reset. */
async function scriptCalls(): Promise<number> {
  const stats = await client.info("commandstats");
  let calls = 0;
  for (const m of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) calls += Number(m[1]);
  return calls;
}

interface Running {
  gateway: RedisLimiter;
  ticket: Ticket;
  charge: Charge;
  endsAt: number;
}

/** Ends the requests due by `now`, each settled to `usage` of its reservation (undefined: keeps it). */
async function endDue(running: Running[], now: number, usage: (reserved: number) => number | undefined) {
  for (const r of running.filter((r) => r.endsAt <= now)) {
    running.splice(running.indexOf(r), 1);
    const used = usage(r.charge.amount);
    if (used !== undefined) r.charge.amount = used;
    await r.gateway.finish(r.ticket, used);
  }
}

beforeAll(async () => {
  redis = await startRedis();
  client = new Redis(redis.url);
});

afterAll(async () => {
  for (const l of open) await l.close();
  client?.disconnect();
  await redis?.stop();
});

describe("leases, two gateways sharing Redis", () => {
  /** Two hours of volleys and pauses on both gateways: mostly under the limits (leases at work), now and then far over. */
  async function randomTraffic(
    p: GatewayPolicy,
    seed: number,
    reserve: (next: () => number) => number,
    longestMs: number,
  ) {
    const gateways = await twoGateways();
    const next = random(seed);
    const tokens: Charge[] = [];
    const requests: Charge[] = [];
    const running: Running[] = [];
    let attempts = 0;
    await client.config("RESETSTAT");
    let now = START;
    while (now < START + 2 * 3_600_000) {
      now += next() < 0.8 ? Math.floor(next() * 400) : Math.floor(next() * 60_000);
      await endDue(running, now, (reserved) => (next() < 0.1 ? undefined : Math.floor(next() * (reserved + 1))));
      const volley = 1 + Math.floor(next() * 40);
      for (let i = 0; i < volley; i++) {
        const gateway = gateways[Math.floor(next() * 2)]!;
        const amount = reserve(next);
        attempts++;
        const result = await gateway.admit(admission(p, amount, now));
        if (!result.ok) continue;
        const charge = { at: now, amount };
        tokens.push(charge);
        requests.push({ at: now, amount: 1 });
        running.push({ gateway, ticket: result.ticket, charge, endsAt: now + Math.floor(next() * longestMs) });
      }
    }
    return { tokens, requests, attempts, calls: await scriptCalls() };
  }

  it("random traffic on both never puts more requests than the limit into any minute", async () => {
    const limits = { requestsPerMinute: 300, tokensPerMinute: 10_000_000 };
    const run = await randomTraffic(policy("requests", limits), 21, (next) => 1 + Math.floor(next() * 20), 5_000);
    // Leases were at work: fewer calls than admissions asked for, although refusals and settlements take calls.
    expect(run.calls).toBeLessThan(run.attempts);
    // Each limit was reached (so each was tested), none passed.
    expect(mostInAnySpan(run.requests, MINUTE_MS)).toBeLessThanOrEqual(limits.requestsPerMinute);
    expect(mostInAnySpan(run.requests, MINUTE_MS)).toBeGreaterThan(limits.requestsPerMinute * 0.9);
  });

  it("random traffic on both never puts more tokens than the limits into any minute or day", async () => {
    const limits = { requestsPerMinute: 100_000, tokensPerMinute: 60_000, tokensPerDay: 2_000_000 };
    const run = await randomTraffic(policy("tokens", limits), 22, (next) => 1 + Math.floor(next() * 600), 20_000);
    expect(run.calls).toBeLessThan(run.attempts);
    expect(mostInAnySpan(run.tokens, MINUTE_MS)).toBeLessThanOrEqual(limits.tokensPerMinute);
    // Usage below the reservations (settled) keeps the charged sum under what was admitted.
    expect(mostInAnySpan(run.tokens, MINUTE_MS)).toBeGreaterThan(limits.tokensPerMinute * 0.8);
    expect(mostInAnySpan(run.tokens, DAY_MS)).toBeLessThanOrEqual(limits.tokensPerDay);
    expect(mostInAnySpan(run.tokens, DAY_MS)).toBeGreaterThan(limits.tokensPerDay * 0.9);
  });

  it("sustained traffic on both gets at least 98 % of a token limit, and never more than it", async () => {
    const tpm = 40_000;
    const p = policy("sustained", { tokensPerMinute: tpm });
    const gateways = await twoGateways();
    const next = random(8);
    const charges: Charge[] = [];
    const running: Running[] = [];
    // Each gateway: a new request every 100 ms, reserving 50 to 350 (1 % of the limit covers each),
    // running 1 to 3 s and using up to 20 tokens less than it reserved: three times the limit in demand.
    for (let now = START; now < START + 7 * MINUTE_MS; now += 50) {
      await endDue(running, now, (reserved) => reserved - Math.floor(next() * 21));
      const gateway = gateways[(now / 50) % 2]!;
      const reserve = 50 + Math.floor(next() * 301);
      const result = await gateway.admit(admission(p, reserve, now));
      if (!result.ok) continue;
      const charge = { at: now, amount: reserve };
      charges.push(charge);
      running.push({ gateway, ticket: result.ticket, charge, endsAt: now + 1_000 + Math.floor(next() * 2_000) });
    }
    const steady = charges.filter((c) => c.at >= START + MINUTE_MS).reduce((sum, c) => sum + c.amount, 0);
    const share = steady / (6 * tpm);
    expect(share).toBeGreaterThanOrEqual(0.98);
    expect(share).toBeLessThanOrEqual(1);
    expect(mostInAnySpan(charges, MINUTE_MS)).toBeLessThanOrEqual(tpm);
  });

  it("concurrency across both stays within its limit, and the slots held in blocks come back", async () => {
    const limit = 200;
    const p = policy("slots", { concurrentRequests: limit });
    const gateways = await twoGateways();
    const next = random(3);
    const running: Running[] = [];
    let most = 0;
    for (let now = START; now < START + 30_000; now += 10) {
      await endDue(running, now, () => 1);
      for (let i = 0; i < 6; i++) {
        const gateway = gateways[Math.floor(next() * 2)]!;
        const result = await gateway.admit(admission(p, 1, now));
        if (!result.ok) continue;
        running.push({
          gateway,
          ticket: result.ticket,
          charge: { at: now, amount: 1 },
          endsAt: now + Math.floor(next() * 3_000),
        });
        most = Math.max(most, running.length);
      }
    }
    expect(most).toBeLessThanOrEqual(limit);
    // Each gateway holds at most 1 % of the limit unused in its block.
    expect(most).toBeGreaterThanOrEqual(limit - 2 * (limit / 100));
    await endDue(running, Number.POSITIVE_INFINITY, () => 1);
    // Once both gateways' blocks are given back, one gateway alone can run the whole limit at once.
    const [a] = gateways;
    await eventually("every slot to be free for one gateway", async () => {
      const tickets: Ticket[] = [];
      for (let i = 0; i < limit; i++) {
        const result = await a.admit(admission(p, 1, Date.now()));
        if (result.ok) tickets.push(result.ticket);
      }
      for (const t of tickets) await a.finish(t, 1);
      return tickets.length === limit ? true : undefined;
    });
  });

  it("a limit whose 1 % is less than a request is not leased: both gateways together admit it exactly", async () => {
    // 1 % of 5,000 tokens is 50, less than a request of 100; 1 % of 50 requests is less than one.
    const tokens = policy("small-tokens", { tokensPerMinute: 5_000, requestsPerMinute: 100_000 });
    const requests = policy("small-requests", { requestsPerMinute: 50, tokensPerMinute: 1_000_000 });
    const gateways = await twoGateways();
    for (const [p, expected] of [
      [tokens, 50],
      [requests, 50],
    ] as const) {
      let admitted = 0;
      for (let i = 0; i < 200; i++) {
        const result = await gateways[i % 2]!.admit(admission(p, 100, START + i));
        if (result.ok) admitted++;
      }
      expect(admitted).toBe(expected);
    }
    expect(await client.keys(`lease${run - 1}:*:cb`)).toEqual([]);
  });

  it("Redis down: a leased counter is admitted until its slice ends, then the failure mode applies as before", async () => {
    const own = await startRedis();
    let stopped = false;
    const p = policy("down", { requestsPerMinute: 10_000, tokensPerMinute: 1_000_000 });
    const make = (onFailure: "allow" | "deny") =>
      new RedisLimiter({ url: own.url, onFailure, metrics: createMetrics(), prefix: `down-${onFailure}:` });
    const limiters = { allow: make("allow"), deny: make("deny") };
    try {
      for (const l of Object.values(limiters)) {
        expect(await l.connected(10_000)).toBe(true);
        expect((await l.admit(admission(p, 10, START))).ok).toBe(true);
      }
      await own.stop();
      stopped = true;
      for (const l of Object.values(limiters)) {
        // Leased before Redis went away: charged there already, still good within its slice.
        const leased = await l.admit(admission(p, 10, START + 1));
        expect(leased.ok && !leased.ticket.unlimited).toBe(true);
      }
      // The next slice needs Redis: deny refuses, allow lets the request through unlimited.
      await expect(limiters.deny.admit(admission(p, 10, START + MINUTE_SLICE_MS))).rejects.toThrow(LimitsUnavailable);
      const allowed = await limiters.allow.admit(admission(p, 10, START + MINUTE_SLICE_MS));
      expect(allowed.ok && allowed.ticket.unlimited).toBe(true);
    } finally {
      for (const l of Object.values(limiters)) await l.close();
      if (!stopped) await own.stop();
    }
  });
});
