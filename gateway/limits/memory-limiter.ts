/** Limits kept in this process: right for a single gateway replica. Each admission is synchronous, hence atomic. */
import type { LimitKind } from "../errors.ts";
import {
  type Admission,
  type AdmissionResult,
  DAY_MS,
  type LimitCheck,
  type Limiter,
  limitValueOf,
  MINUTE_MS,
  requestWindowLimit,
  type Ticket,
} from "./limiter.ts";
import { SlidingWindow } from "./sliding-window.ts";

interface Counter {
  /** The burst bucket (only when the policy sets burst): tokens left, NaN while full and untouched. */
  bucket: number;
  bucketAt: number;
  /** Windows are made on first use, so a key only pays for the limits its policies set. */
  requests?: SlidingWindow;
  minute?: SlidingWindow;
  day?: SlidingWindow;
  inFlight: number;
}

export class MemoryLimiter implements Limiter {
  private readonly counters = new Map<string, Counter>();

  private counter(key: string, now: number): Counter {
    let c = this.counters.get(key);
    if (!c) {
      c = {
        bucket: Number.NaN,
        bucketAt: now,
        inFlight: 0,
      };
      this.counters.set(key, c);
    }
    return c;
  }

  /** The bucket at `now`; the arithmetic is the Lua script's, operation for operation, so both round alike. */
  private refill(c: Counter, rpm: number, capacity: number, now: number): number {
    const start = Number.isNaN(c.bucket) ? capacity : c.bucket;
    return Math.min(capacity, start + (Math.max(0, now - c.bucketAt) * rpm) / MINUTE_MS);
  }

  async admit(admission: Admission): Promise<AdmissionResult> {
    const now = admission.nowMs;
    const { tokens } = admission;
    const reject = (check: LimitCheck, limit: LimitKind, retryAfterMs: number): AdmissionResult => ({
      ok: false,
      rejection: { check, limit, limitValue: limitValueOf(check.policy, limit), retryAfterMs },
    });
    for (const check of admission.checks) {
      const p = check.policy;
      const c = this.counter(check.counterKey, now);
      if (p.requestsPerMinute !== undefined) {
        if (p.burst !== undefined) {
          const left = this.refill(c, p.requestsPerMinute, p.burst, now);
          if (left < 1) return reject(check, "requests", Math.ceil(((1 - left) * MINUTE_MS) / p.requestsPerMinute));
        }
        const limit = requestWindowLimit(p);
        c.requests ??= new SlidingWindow(MINUTE_MS);
        if (c.requests.used(now) + 1 > limit) return reject(check, "requests", c.requests.retryAfterMs(now, 1, limit));
      }
      if (p.tokensPerMinute !== undefined) {
        c.minute ??= new SlidingWindow(MINUTE_MS);
        if (c.minute.used(now) + tokens > p.tokensPerMinute) {
          return reject(check, "tokens_per_minute", c.minute.retryAfterMs(now, tokens, p.tokensPerMinute));
        }
      }
      if (p.tokensPerDay !== undefined) {
        c.day ??= new SlidingWindow(DAY_MS);
        if (c.day.used(now) + tokens > p.tokensPerDay) {
          return reject(check, "tokens_per_day", c.day.retryAfterMs(now, tokens, p.tokensPerDay));
        }
      }
      if (p.concurrentRequests !== undefined && c.inFlight >= p.concurrentRequests) {
        return reject(check, "concurrent_requests", 1_000);
      }
    }
    for (const check of admission.checks) {
      const p = check.policy;
      const c = this.counter(check.counterKey, now);
      if (p.requestsPerMinute !== undefined) {
        if (p.burst !== undefined) {
          c.bucket = this.refill(c, p.requestsPerMinute, p.burst, now) - 1;
          c.bucketAt = now;
        }
        c.requests?.add(now, 1);
      }
      if (p.tokensPerMinute !== undefined) c.minute?.add(now, tokens);
      if (p.tokensPerDay !== undefined) c.day?.add(now, tokens);
      c.inFlight++;
    }
    return { ok: true, ticket: { admission, unlimited: false } };
  }

  async finish(ticket: Ticket, actualTokens: number | undefined): Promise<void> {
    const { admission } = ticket;
    const delta = actualTokens === undefined ? 0 : actualTokens - admission.tokens;
    for (const check of admission.checks) {
      const c = this.counters.get(check.counterKey);
      if (!c) continue;
      if (delta !== 0) {
        c.minute?.settle(admission.nowMs, delta);
        c.day?.settle(admission.nowMs, delta);
      }
      c.inFlight = Math.max(0, c.inFlight - 1);
    }
  }

  async close(): Promise<void> {}
}
