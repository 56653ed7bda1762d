/**
 * Budget this gateway leased from Redis in advance, so that most admissions are decided here, without a
 * round trip (the Redis limiter takes and gives back leases in its script: redis-limiter.ts).
 *
 * A lease is charged in Redis the moment it is taken, as if that much had been admitted then, in the
 * current minute slice (500 ms). Requests admitted against it are admitted in that same slice, so every
 * window counts them exactly as the lease was counted: what all gateways admit in a window-length span
 * still never exceeds a limit. A lease is used only within its slice; what is left is given back at the
 * slice's end (like a refund, into the slice it was charged in), with the next round trip of its counter,
 * or by the sweep. Each lease is LEASE_SHARE of a limit at most; a limit whose share is smaller than one
 * request's cost is not leased: its requests take the round trip each, exact as before.
 *
 * Concurrency slots are leased too: a gateway holds a block of slots in Redis (a hash field per gateway,
 * with an expiry, so a dead gateway's block is reclaimed after CONCURRENCY_LEASE_MS like a request's slot),
 * takes them for its requests locally, and gives the free ones back at the slice's end; a slot freed after
 * that goes back with the next call (within SETTLE_DELAY_MS).
 *
 * Order keeps Redis on the safe side: what is given back leaves the local lease before it is sent; what
 * is taken joins it only once Redis has charged it. A call that fails gives nothing to the lease.
 */
import type { GatewayPolicy } from "../../crds/api/index.ts";
import type { Admission, LimitCheck } from "./limiter.ts";
import { DAY_SLICE_MS, MINUTE_SLICE_MS } from "./limiter.ts";

/** A lease holds at most this share of a limit. */
export const LEASE_SHARE = 0.01;
/** Counters holding a lease at most; beyond it, requests of other counters take the round trip. */
export const MAX_LEASED_COUNTERS = 1_000;

/** How much one lease of a policy holds per limit (0: the policy does not set that limit). */
export interface LeaseSizes {
  requests: number;
  minute: number;
  day: number;
  slots: number;
}

const share = (limit: number | undefined) => (limit === undefined ? 0 : Math.floor(limit * LEASE_SHARE));

/**
 * The lease for a policy and a request of `tokens`, or undefined when any of its limits is too small to
 * lease such a request from (or the policy has a burst: its bucket is kept per request).
 */
export function leaseSizes(p: GatewayPolicy, tokens: number): LeaseSizes | undefined {
  if (p.requestsPerMinute !== undefined && p.burst !== undefined) return undefined;
  const s = {
    requests: share(p.requestsPerMinute),
    minute: share(p.tokensPerMinute),
    day: share(p.tokensPerDay),
    slots: share(p.concurrentRequests),
  };
  const least = Math.max(1, tokens);
  if (p.requestsPerMinute !== undefined && s.requests < 1) return undefined;
  if (p.tokensPerMinute !== undefined && s.minute < least) return undefined;
  if (p.tokensPerDay !== undefined && s.day < least) return undefined;
  if (p.concurrentRequests !== undefined && s.slots < 1) return undefined;
  return s;
}

const limited = (p: GatewayPolicy) =>
  p.requestsPerMinute !== undefined ||
  p.tokensPerMinute !== undefined ||
  p.tokensPerDay !== undefined ||
  p.concurrentRequests !== undefined;

interface Lease {
  /** The minute slice the window remainders were charged in (they are valid only while it lasts). */
  slice: number;
  requests: number;
  minute: number;
  day: number;
  /** Concurrency slots this gateway holds in Redis for the counter, and how many of them requests use. */
  slots: number;
  inFlight: number;
  /** Until the sweep at `returnAt` (this process's clock) gives back what is left. */
  live: boolean;
  returnAt: number;
  /** Calls on their way that may grant to it: it is not dropped meanwhile. */
  calls: number;
  /** Budget taken ahead, charged in the next slice: it becomes the lease when an admission reaches that slice. */
  next?: Ahead;
}

interface Ahead {
  slice: number;
  requests: number;
  minute: number;
  day: number;
  /** When the sweep gives it back if no admission came in its slice (this process's clock). */
  returnAt: number;
}

/** What one script call does with one counter's lease: give back, then (for `take`) take. */
export interface LeaseOp {
  counterKey: string;
  back: { slice: number; requests: number; minute: number; day: number; slots: number };
  /**
   * Budget to take in the call's slice (ahead: in the next one): strict asks each limit for at least one
   * request's worth or nothing.
   */
  take?: { policy: GatewayPolicy; sizes: LeaseSizes; strict: boolean; tokens: number; ahead?: boolean };
}

/** Budget granted to one op: requests, minute tokens, day tokens, slots. */
export type Grant = [number, number, number, number];

const nothingBack = () => ({ slice: 0, requests: 0, minute: 0, day: 0, slots: 0 });
const sliceOf = (nowMs: number) => Math.floor(nowMs / MINUTE_SLICE_MS);
export const daySliceOf = (minuteSlice: number) => Math.floor((minuteSlice * MINUTE_SLICE_MS) / DAY_SLICE_MS);

export class LeaseBook {
  private readonly leases = new Map<string, Lease>();
  /** This process's clock, for the sweep (admissions carry their own time). */
  private readonly clock: () => number;

  constructor(clock: () => number = Date.now) {
    this.clock = clock;
  }

  get size(): number {
    return this.leases.size;
  }

  /**
   * Admits the request here if every check is covered by a lease of its slice, and takes from them. A
   * lease taken ahead for this slice takes over first; what the older slice left goes into `back`.
   */
  admitLocally(a: Admission, back: LeaseOp[]): boolean {
    const slice = sliceOf(a.nowMs);
    for (const c of a.checks) {
      if (!limited(c.policy)) continue;
      const l = this.leases.get(c.counterKey);
      if (l) this.promote(c.counterKey, l, slice, back);
      if (!l || !this.covers(l, c.policy, a.tokens, slice)) return false;
    }
    for (const c of a.checks) {
      const l = this.leases.get(c.counterKey);
      if (!l) continue;
      const p = c.policy;
      if (p.requestsPerMinute !== undefined) l.requests--;
      if (p.tokensPerMinute !== undefined) l.minute -= a.tokens;
      if (p.tokensPerDay !== undefined) l.day -= a.tokens;
      if (p.concurrentRequests !== undefined) l.inFlight++;
    }
    return true;
  }

  /**
   * The lease taken ahead for `slice` becomes the lease (or joins it, if a round trip already leased in
   * that slice), once an admission is in that slice.
   */
  private promote(key: string, l: Lease, slice: number, back: LeaseOp[]): void {
    const next = l.next;
    if (!next || next.slice !== slice) return;
    if (l.slice !== slice) {
      const old = this.giveBack(l, false);
      if (old.requests + old.minute + old.day > 0) back.push({ counterKey: key, back: old });
      l.slice = slice;
    }
    l.requests += next.requests;
    l.minute += next.minute;
    l.day += next.day;
    l.live = true;
    l.returnAt = Math.max(l.returnAt, next.returnAt);
    l.next = undefined;
  }

  private covers(l: Lease, p: GatewayPolicy, tokens: number, slice: number): boolean {
    if (!leaseSizes(p, tokens)) return false;
    const inSlice = l.live && l.slice === slice;
    if (p.requestsPerMinute !== undefined && !(inSlice && l.requests >= 1)) return false;
    if (p.tokensPerMinute !== undefined && !(inSlice && l.minute >= tokens)) return false;
    if (p.tokensPerDay !== undefined && !(inSlice && l.day >= tokens)) return false;
    if (p.concurrentRequests !== undefined && l.inFlight >= l.slots) return false;
    return true;
  }

  /**
   * A locally admitted request ended. A refund of its slice's lease goes back into the lease; its slot
   * returns to the block (or, once the block's slice is over, to Redis through `back`). Returns the checks
   * whose token correction must still be settled in Redis.
   */
  finishLocal(a: Admission, delta: number, back: LeaseOp[]): LimitCheck[] {
    const slice = sliceOf(a.nowMs);
    const settle: LimitCheck[] = [];
    for (const c of a.checks) {
      const p = c.policy;
      const l = this.leases.get(c.counterKey);
      if (p.concurrentRequests !== undefined && l && l.inFlight > 0) {
        l.inFlight--;
        if (!l.live) {
          l.slots--;
          back.push({ counterKey: c.counterKey, back: { ...nothingBack(), slots: 1 } });
        }
      }
      const tokenLimits = p.tokensPerMinute !== undefined || p.tokensPerDay !== undefined;
      if (delta !== 0 && tokenLimits) {
        if (delta < 0 && l?.live && l.slice === slice) {
          if (p.tokensPerMinute !== undefined) l.minute -= delta;
          if (p.tokensPerDay !== undefined) l.day -= delta;
        } else settle.push(c);
      }
      if (l) this.dropIfIdle(c.counterKey, l);
    }
    return settle;
  }

  /**
   * Before an admission asks Redis: each of its counters gives back what it holds unused (so the check
   * counts only what was really admitted) and asks for a fresh lease, taken only if the admission passes.
   */
  forAdmission(a: Admission): LeaseOp[] {
    const ops: LeaseOp[] = [];
    for (const c of a.checks) {
      const sizes = leaseSizes(c.policy, a.tokens);
      let l = this.leases.get(c.counterKey);
      if (!l && sizes && this.leases.size < MAX_LEASED_COUNTERS) {
        l = { slice: 0, requests: 0, minute: 0, day: 0, slots: 0, inFlight: 0, live: false, returnAt: 0, calls: 0 };
        this.leases.set(c.counterKey, l);
      }
      if (!l) continue;
      this.promote(c.counterKey, l, sliceOf(a.nowMs), ops);
      // Taken ahead for a slice already past: back with the rest.
      if (l.next && l.next.slice < sliceOf(a.nowMs)) {
        const { slice, requests, minute, day } = l.next;
        ops.push({ counterKey: c.counterKey, back: { slice, requests, minute, day, slots: 0 } });
        l.next = undefined;
      }
      const op: LeaseOp = { counterKey: c.counterKey, back: this.giveBack(l) };
      if (sizes) {
        op.take = { policy: c.policy, sizes, strict: true, tokens: a.tokens };
        l.calls++;
      } else this.dropIfIdle(c.counterKey, l);
      ops.push(op);
    }
    return ops;
  }

  /**
   * After a local admission, in the background: tops up the leases that are half spent, and in the last
   * quarter of a slice takes the next slice's lease ahead, so steady traffic does not wait at its start.
   */
  topUps(a: Admission): LeaseOp[] {
    const slice = sliceOf(a.nowMs);
    const ops: LeaseOp[] = [];
    for (const c of a.checks) {
      const l = this.leases.get(c.counterKey);
      const s = leaseSizes(c.policy, a.tokens);
      if (!l || !s || l.calls > 0 || l.slice !== slice) continue;
      const want: LeaseSizes = {
        requests: s.requests > 0 ? s.requests - l.requests : 0,
        minute: s.minute > 0 ? s.minute - l.minute : 0,
        day: s.day > 0 ? s.day - l.day : 0,
        slots: s.slots > 0 ? s.slots - (l.slots - l.inFlight) : 0,
      };
      const low =
        want.requests > s.requests / 2 ||
        want.minute > s.minute / 2 ||
        want.day > s.day / 2 ||
        want.slots > s.slots / 2;
      const windows = s.requests + s.minute + s.day > 0;
      const late = a.nowMs - slice * MINUTE_SLICE_MS >= 0.75 * MINUTE_SLICE_MS;
      if (low) {
        l.calls++;
        ops.push({
          counterKey: c.counterKey,
          back: nothingBack(),
          take: { policy: c.policy, sizes: want, strict: false, tokens: a.tokens },
        });
      } else if (late && windows && !l.next) {
        l.calls++;
        ops.push({
          counterKey: c.counterKey,
          back: nothingBack(),
          take: { policy: c.policy, sizes: { ...s, slots: 0 }, strict: false, tokens: a.tokens, ahead: true },
        });
      }
    }
    return ops;
  }

  /**
   * What Redis granted to each op of a call made at `nowMs` (grants undefined: the call failed or the
   * admission was refused, so nothing was taken). Returns leases to give back: a grant for a slice the
   * lease has already left.
   */
  granted(ops: LeaseOp[], grants: Grant[] | undefined, nowMs: number): LeaseOp[] {
    const slice = sliceOf(nowMs);
    const back: LeaseOp[] = [];
    ops.forEach((op, i) => {
      if (!op.take) return;
      const l = this.leases.get(op.counterKey);
      if (!l) return;
      l.calls--;
      const [requests, minute, day, slots] = grants?.[i] ?? [0, 0, 0, 0];
      if (op.take.ahead) {
        if (requests + minute + day > 0)
          this.aheadGranted(op.counterKey, l, slice + 1, requests, minute, day, nowMs, back);
      } else if (requests + minute + day + slots > 0) {
        if (l.slice !== slice && l.requests + l.minute + l.day > 0) {
          // Two calls crossed a slice's end: the older slice's remainder goes back, the newer one is kept.
          if (l.slice < slice) {
            back.push({ counterKey: op.counterKey, back: { ...this.giveBack(l, false), slots: 0 } });
            Object.assign(l, { slice, requests, minute, day });
          } else back.push({ counterKey: op.counterKey, back: { slice, requests, minute, day, slots: 0 } });
        } else {
          l.slice = slice;
          l.requests += requests;
          l.minute += minute;
          l.day += day;
        }
        l.slots += slots;
        l.live = true;
        l.returnAt = Math.max(l.returnAt, this.clock() + (slice + 1) * MINUTE_SLICE_MS - nowMs);
      }
      this.dropIfIdle(op.counterKey, l);
    });
    return back;
  }

  private aheadGranted(
    key: string,
    l: Lease,
    slice: number,
    requests: number,
    minute: number,
    day: number,
    nowMs: number,
    back: LeaseOp[],
  ): void {
    if (l.slice < slice && !l.next) {
      l.next = { slice, requests, minute, day, returnAt: this.clock() + (slice + 1) * MINUTE_SLICE_MS - nowMs };
    } else if (l.next?.slice === slice) {
      l.next.requests += requests;
      l.next.minute += minute;
      l.next.day += day;
    } else back.push({ counterKey: key, back: { slice, requests, minute, day, slots: 0 } });
  }

  /** Gives back every lease whose slice is over by this process's clock (all of them with `all`). */
  sweep(all = false): LeaseOp[] {
    const now = this.clock();
    const back: LeaseOp[] = [];
    for (const [key, l] of this.leases) {
      if (l.live && (all || l.returnAt <= now)) {
        const b = this.giveBack(l);
        l.live = false;
        if (b.requests + b.minute + b.day + b.slots > 0) back.push({ counterKey: key, back: b });
      }
      if (l.next && (all || l.next.returnAt <= now)) {
        const { slice, requests, minute, day } = l.next;
        back.push({ counterKey: key, back: { slice, requests, minute, day, slots: 0 } });
        l.next = undefined;
      }
      this.dropIfIdle(key, l);
    }
    return back;
  }

  /** When the next sweep is due by this process's clock, or undefined if no lease is live. */
  nextSweepAt(): number | undefined {
    let next: number | undefined;
    for (const l of this.leases.values()) {
      if (l.live && (next === undefined || l.returnAt < next)) next = l.returnAt;
      if (l.next && (next === undefined || l.next.returnAt < next)) next = l.next.returnAt;
    }
    return next;
  }

  /** Empties the unused part of a lease, its free slots too unless `slots` is false (the caller sends it back). */
  private giveBack(l: Lease, slots = true): LeaseOp["back"] {
    const b = {
      slice: l.slice,
      requests: l.requests,
      minute: l.minute,
      day: l.day,
      slots: slots ? l.slots - l.inFlight : 0,
    };
    l.requests = 0;
    l.minute = 0;
    l.day = 0;
    if (slots) l.slots = l.inFlight;
    return b;
  }

  private dropIfIdle(key: string, l: Lease): void {
    if (
      !l.live &&
      !l.next &&
      l.calls === 0 &&
      l.slots === 0 &&
      l.inFlight === 0 &&
      l.requests + l.minute + l.day === 0
    ) {
      this.leases.delete(key);
    }
  }
}
