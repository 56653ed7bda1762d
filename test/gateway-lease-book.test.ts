// The lease book on its own (gateway/limits/leases.ts): which limits are leased, what a lease admits
// locally and only within its slice, that the book holds at most MAX_LEASED_COUNTERS counters and drops a
// counter once its lease is given back and nothing of it is in use. Grants are what the Redis script would
// answer; the book's clock is injected so the sweep is called when its slice is over.
import { describe, expect, it } from "vitest";
import type { GatewayPolicy } from "../crds/api/index.ts";
import { LeaseBook, type LeaseOp, leaseSizes, MAX_LEASED_COUNTERS } from "../gateway/limits/leases.ts";
import { type Admission, MINUTE_SLICE_MS } from "../gateway/limits/limiter.ts";

const big: GatewayPolicy = {
  namespace: "b",
  name: "big",
  scope: "PerKey",
  requestsPerMinute: 10_000,
  tokensPerMinute: 100_000,
  concurrentRequests: 500,
};
const T0 = Date.UTC(2026, 0, 1, 12, 0);
let id = 0;
const admission = (counterKey: string, nowMs: number, tokens = 100, policy = big): Admission => ({
  requestId: `r${id++}`,
  checks: [{ policy, counterKey }],
  tokens,
  nowMs,
});

describe("the lease book", () => {
  it("leases 1 % of each limit, and nothing when 1 % is less than the request or the policy has a burst", () => {
    expect(leaseSizes(big, 100)).toEqual({ requests: 100, minute: 1_000, day: 0, slots: 5 });
    expect(leaseSizes(big, 1_001)).toBeUndefined();
    expect(leaseSizes({ ...big, requestsPerMinute: 99 }, 1)).toBeUndefined();
    expect(leaseSizes({ ...big, concurrentRequests: 99 }, 1)).toBeUndefined();
    expect(leaseSizes({ ...big, burst: 20_000 }, 1)).toBeUndefined();
  });

  it("admits locally only within the slice of its lease, and only what the lease holds", () => {
    const book = new LeaseBook(() => 0);
    const first = admission("k", T0);
    expect(book.admitLocally(first, [])).toBe(false);
    book.granted(book.forAdmission(first), [[100, 1_000, 0, 5]], T0);
    // Five slots: five requests in flight, the sixth waits for one to end.
    const running = Array.from({ length: 5 }, () => admission("k", T0 + 1));
    for (const a of running) expect(book.admitLocally(a, [])).toBe(true);
    expect(book.admitLocally(admission("k", T0 + 1), [])).toBe(false);
    // One ends using 50 tokens less than its 100: its slot and the 50 tokens go back into the lease.
    expect(book.finishLocal(running.pop()!, -50, [])).toEqual([]);
    // 1,000 − 5 × 100 + 50 = 550 tokens left: five more of 100 and one of 50, then none.
    for (let i = 0; i < 5; i++) {
      const a = admission("k", T0 + 2);
      expect(book.admitLocally(a, [])).toBe(true);
      book.finishLocal(a, 0, []);
    }
    const last = admission("k", T0 + 2, 50);
    expect(book.admitLocally(last, [])).toBe(true);
    book.finishLocal(last, 0, []);
    expect(book.admitLocally(admission("k", T0 + 2, 1), [])).toBe(false);
    // A refund in another slice than the lease's is settled in Redis instead.
    expect(book.finishLocal(running.pop()!, -10, [])).toEqual([]);
    expect(book.finishLocal({ ...admission("k", T0 + MINUTE_SLICE_MS), checks: first.checks }, -10, [])).toEqual(
      first.checks,
    );
    // The next slice: the lease no longer admits.
    expect(book.admitLocally(admission("k", T0 + MINUTE_SLICE_MS, 1), [])).toBe(false);
  });

  it("holds at most MAX_LEASED_COUNTERS counters and drops each once given back and idle", () => {
    let now = 0;
    const book = new LeaseBook(() => now);
    const tickets: Admission[] = [];
    for (let i = 0; i <= MAX_LEASED_COUNTERS; i++) {
      const a = admission(`c${i}`, T0);
      const ops = book.forAdmission(a);
      if (i === MAX_LEASED_COUNTERS) {
        expect(ops).toEqual([]);
        continue;
      }
      book.granted(ops, [[100, 1_000, 0, 5]], T0);
      const local = admission(`c${i}`, T0);
      expect(book.admitLocally(local, [])).toBe(true);
      tickets.push(local);
    }
    expect(book.size).toBe(MAX_LEASED_COUNTERS);
    // The slice ends: every lease gives back its remainder and free slots; the one slot in use stays.
    now = MINUTE_SLICE_MS;
    const back = book.sweep();
    expect(back).toHaveLength(MAX_LEASED_COUNTERS);
    expect(back[0]!.back).toEqual({
      slice: Math.floor(T0 / MINUTE_SLICE_MS),
      requests: 99,
      minute: 900,
      day: 0,
      slots: 4,
    });
    expect(book.size).toBe(MAX_LEASED_COUNTERS);
    // Each request ends: its slot goes back to Redis and its counter is dropped.
    const slotsBack: LeaseOp[] = [];
    for (const t of tickets) book.finishLocal(t, 0, slotsBack);
    expect(slotsBack).toHaveLength(MAX_LEASED_COUNTERS);
    expect(book.size).toBe(0);
  });

  it("a lease taken ahead takes over in its slice, the older slice's remainder going back; unused, the sweep gives it back", () => {
    let now = 0;
    const book = new LeaseBook(() => now);
    const windows: GatewayPolicy = { ...big, concurrentRequests: undefined };
    const slice = Math.floor(T0 / MINUTE_SLICE_MS);
    book.granted(book.forAdmission(admission("k", T0, 100, windows)), [[100, 1_000, 0, 0]], T0);
    // In the slice's last quarter a local admission asks for the next slice's lease.
    const late = admission("k", T0 + 400, 100, windows);
    expect(book.admitLocally(late, [])).toBe(true);
    const ahead = book.topUps(late);
    expect(ahead.map((op) => op.take?.ahead)).toEqual([true]);
    book.granted(ahead, [[100, 1_000, 0, 0]], late.nowMs);
    const back: LeaseOp[] = [];
    expect(book.admitLocally(admission("k", T0 + MINUTE_SLICE_MS, 100, windows), back)).toBe(true);
    expect(back).toEqual([{ counterKey: "k", back: { slice, requests: 99, minute: 900, day: 0, slots: 0 } }]);
    // Taken ahead again, then no admission in its slice: the sweep gives back both.
    const late2 = admission("k", T0 + MINUTE_SLICE_MS + 400, 100, windows);
    expect(book.admitLocally(late2, [])).toBe(true);
    book.granted(book.topUps(late2), [[100, 1_000, 0, 0]], late2.nowMs);
    now = 3 * MINUTE_SLICE_MS;
    expect(book.sweep().map((op) => [op.back.slice, op.back.requests, op.back.minute])).toEqual([
      [slice + 1, 98, 800],
      [slice + 2, 100, 1_000],
    ]);
    expect(book.size).toBe(0);
  });
});
