// What a request costs in Redis with the shared limiter: one script call per admitted request, its
// settlement riding with the next admission, and settlements that reach the other gateways on their own
// when no admission comes. Real redis-server; the calls are counted by Redis itself (INFO commandstats).
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayPolicy } from "../crds/api/index.ts";
import type { Admission, Ticket } from "../gateway/limits/limiter.ts";
import { MINUTE_SLICE_MS } from "../gateway/limits/limiter.ts";
import { RedisLimiter, SETTLE_BATCH } from "../gateway/limits/redis-limiter.ts";
import { createMetrics } from "../gateway/metrics.ts";
import { eventually } from "./support/processes.ts";
import { startRedis, type TestRedis } from "./support/redis.ts";

const policy: GatewayPolicy = {
  namespace: "rt",
  name: "all",
  scope: "PerKey",
  requestsPerMinute: 1_000_000,
  tokensPerMinute: 1_000_000,
  tokensPerDay: 10_000_000,
  // One slot: 1 % of it is less than a request, so it is never leased and every admission asks Redis.
  concurrentRequests: 1,
};
/** Every limit large enough to lease (1 % of each covers a request of 30 tokens). */
const leasable: GatewayPolicy = { ...policy, name: "leasable", concurrentRequests: 1_000 };

let redis: TestRedis;
let client: Redis;
const limiters: RedisLimiter[] = [];

function limiter(prefix: string): RedisLimiter {
  const l = new RedisLimiter({ url: redis.url, onFailure: "deny", metrics: createMetrics(), prefix });
  limiters.push(l);
  return l;
}

let id = 0;
const admission = (counterKey: string, p: GatewayPolicy = policy): Admission => ({
  requestId: `r${id++}`,
  checks: [{ policy: p, counterKey }],
  tokens: 30,
  nowMs: Date.now(),
});

/** Script calls Redis has run since the last reset. */
async function scriptCalls(): Promise<number> {
  const stats = await client.info("commandstats");
  let calls = 0;
  for (const m of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) calls += Number(m[1]);
  return calls;
}

beforeAll(async () => {
  redis = await startRedis();
  client = new Redis(redis.url);
});

afterAll(async () => {
  for (const l of limiters) await l.close();
  client?.disconnect();
  await redis?.stop();
});

describe("the Redis limiter's round trips", () => {
  it("one script call per admitted request: each request's settlement rides with the next admission", async () => {
    const l = limiter("one:");
    expect(await l.connected(10_000)).toBe(true);
    // The first call on a connection sends the script's text; count from the second on.
    const first = await l.admit(admission("k"));
    await l.finish((first as { ticket: Ticket }).ticket, 20);
    await client.config("RESETSTAT");
    const requests = 200;
    for (let i = 0; i < requests; i++) {
      // A concurrency limit of 1: each admission is only possible because it settles the previous request first.
      const result = await l.admit(admission("k"));
      expect(result.ok).toBe(true);
      await l.finish((result as { ticket: Ticket }).ticket, 20);
    }
    // The last settlement goes alone once no admission follows it (it may or may not have gone yet).
    const calls = await scriptCalls();
    expect(calls).toBeGreaterThanOrEqual(requests);
    expect(calls).toBeLessThanOrEqual(requests + 1);
  });

  it("a settlement reaches another gateway without waiting for this one's next admission", async () => {
    const a = limiter("two:");
    const b = limiter("two:");
    expect(await a.connected(10_000)).toBe(true);
    expect(await b.connected(10_000)).toBe(true);
    const held = await a.admit(admission("k"));
    expect(held.ok).toBe(true);
    const refused = await b.admit(admission("k"));
    expect(refused.ok).toBe(false);
    await a.finish((held as { ticket: Ticket }).ticket, 20);
    // a admits nothing more: its settlement goes alone, and b's slot frees.
    await eventually("the slot to be free for the other gateway", async () => {
      const result = await b.admit(admission("k"));
      if (!result.ok) return undefined;
      await b.finish(result.ticket, 20);
      return true;
    });
  });

  it("many requests ending at once are settled in batches, every one of them", async () => {
    const a = limiter("many:");
    const b = limiter("many:");
    expect(await a.connected(10_000)).toBe(true);
    expect(await b.connected(10_000)).toBe(true);
    const count = SETTLE_BATCH * 3 + 5;
    // Room for every request's 30 reserved tokens plus 10 more each: a second round fits only if the first
    // round's refunds (30 reserved, 10 used) came back. The burst keeps every admission in Redis (a burst
    // is never leased), so each request has a settlement of its own to send.
    const wide = { ...policy, burst: 1_000_000, concurrentRequests: count, tokensPerMinute: count * 40 };
    const tickets: Ticket[] = [];
    for (let i = 0; i < count; i++) {
      const result = await a.admit(admission("k", wide));
      expect(result.ok).toBe(true);
      tickets.push((result as { ticket: Ticket }).ticket);
    }
    expect((await b.admit(admission("k", wide))).ok).toBe(false);
    await client.config("RESETSTAT");
    for (const t of tickets) await a.finish(t, 10);
    await eventually("every slot to be freed", async () =>
      (await client.zcard("many:k:conc")) === 0 ? true : undefined,
    );
    // Full batches go at once, the rest after the settle delay: not one call per request.
    expect(await scriptCalls()).toBe(Math.ceil(count / SETTLE_BATCH));
    for (let i = 0; i < count; i++) expect((await b.admit(admission("k", wide))).ok).toBe(true);
  });

  it("with leases, a counter's first request takes one script call and the next ones in its slice none", async () => {
    const l = limiter("lease:");
    expect(await l.connected(10_000)).toBe(true);
    const warm = await l.admit(admission("warm", leasable));
    await l.finish((warm as { ticket: Ticket }).ticket, 20);
    await eventually("the warm-up's lease to be given back", async () =>
      (await client.exists("lease:warm:cb")) === 0 ? true : undefined,
    );
    await client.config("RESETSTAT");
    // One instant for all, so no slice ends between them.
    const nowMs = Date.now();
    const first = await l.admit({ ...admission("k", leasable), nowMs });
    expect(first.ok).toBe(true);
    expect(await scriptCalls()).toBe(1);
    for (let i = 0; i < 9; i++) {
      const result = await l.admit({ ...admission("k", leasable), nowMs });
      expect(result.ok).toBe(true);
      await l.finish((result as { ticket: Ticket }).ticket, 20);
    }
    expect(await scriptCalls()).toBe(1);
    // The lease was charged in Redis: the request window holds the first request and 1 % of the limit.
    expect(Number(await client.hget("lease:k:rw", "s"))).toBe(1 + 10_000);
  });

  it("steady traffic with leases: admissions are decided locally, Redis sees a few calls per slice", async () => {
    const l = limiter("steady:");
    expect(await l.connected(10_000)).toBe(true);
    await client.config("RESETSTAT");
    const started = Date.now();
    const requests = 2_000;
    for (let i = 0; i < requests; i++) {
      const result = await l.admit(admission("k", leasable));
      expect(result.ok).toBe(true);
      await l.finish((result as { ticket: Ticket }).ticket, 20);
    }
    const slices = Math.ceil((Date.now() - started) / MINUTE_SLICE_MS) + 1;
    const calls = await scriptCalls();
    // Per slice: its first request's round trip; now and then a top-up, a sweep, a refund across a slice's end.
    expect(calls).toBeLessThanOrEqual(4 * slices);
    expect(calls).toBeLessThan(requests / 20);
  });

  it("a lease taken ahead in a slice's last quarter serves the next slice's first request without a call", async () => {
    const l = limiter("ahead:");
    expect(await l.connected(10_000)).toBe(true);
    const warm = await l.admit(admission("warm", leasable));
    await l.finish((warm as { ticket: Ticket }).ticket, 20);
    await eventually("the warm-up's lease to be given back", async () =>
      (await client.exists("ahead:warm:cb")) === 0 ? true : undefined,
    );
    await client.config("RESETSTAT");
    const slice = Math.floor(Date.now() / MINUTE_SLICE_MS);
    const at = (ms: number) => ({ ...admission("k", leasable), nowMs: slice * MINUTE_SLICE_MS + ms });
    expect((await l.admit(at(100))).ok).toBe(true);
    expect(await scriptCalls()).toBe(1);
    // Local, and late in the slice: the next slice's lease is taken in the background.
    expect((await l.admit(at(0.8 * MINUTE_SLICE_MS))).ok).toBe(true);
    await eventually("the next slice's lease to be charged", async () =>
      (await client.hexists("ahead:k:rw", String(slice + 1))) === 1 ? true : undefined,
    );
    expect(await scriptCalls()).toBe(2);
    // The next slice's first request: admitted against it, so the slice holds just the lease.
    expect((await l.admit(at(MINUTE_SLICE_MS + 10))).ok).toBe(true);
    expect(await client.hget("ahead:k:rw", String(slice + 1))).toBe("10000");
  });
});
