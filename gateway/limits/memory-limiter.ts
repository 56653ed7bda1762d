/** Limits kept in this process: right for a single gateway replica. Each admission is synchronous, hence atomic. */
import type { LimitKind } from "../errors.ts";
import {
  type Admission,
  type AdmissionResult,
  bucketCapacity,
  DAY_MS,
  type LimitCheck,
  type Limiter,
  limitValueOf,
  MINUTE_MS,
  type Ticket,
} from "./limiter.ts";

interface Counter {
  bucket: number;
  bucketAt: number;
  minute: { index: number; used: number };
  day: { index: number; used: number };
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
        minute: { index: 0, used: 0 },
        day: { index: 0, used: 0 },
        inFlight: 0,
      };
      this.counters.set(key, c);
    }
    const minute = Math.floor(now / MINUTE_MS);
    if (c.minute.index !== minute) c.minute = { index: minute, used: 0 };
    const day = Math.floor(now / DAY_MS);
    if (c.day.index !== day) c.day = { index: day, used: 0 };
    return c;
  }

  private refill(c: Counter, check: LimitCheck, now: number): number {
    const capacity = bucketCapacity(check.policy);
    const rate = (check.policy.requestsPerMinute ?? 0) / MINUTE_MS;
    const start = Number.isNaN(c.bucket) ? capacity : c.bucket;
    return Math.min(capacity, start + Math.max(0, now - c.bucketAt) * rate);
  }

  async admit(admission: Admission): Promise<AdmissionResult> {
    const now = admission.nowMs;
    const reject = (check: LimitCheck, limit: LimitKind, retryAfterMs: number): AdmissionResult => ({
      ok: false,
      rejection: { check, limit, limitValue: limitValueOf(check.policy, limit), retryAfterMs },
    });
    for (const check of admission.checks) {
      const p = check.policy;
      const c = this.counter(check.counterKey, now);
      if (p.requestsPerMinute !== undefined) {
        const tokens = this.refill(c, check, now);
        if (tokens < 1) return reject(check, "requests", ((1 - tokens) * MINUTE_MS) / p.requestsPerMinute);
      }
      if (p.tokensPerMinute !== undefined && c.minute.used + admission.tokens > p.tokensPerMinute) {
        return reject(check, "tokens_per_minute", (c.minute.index + 1) * MINUTE_MS - now);
      }
      if (p.tokensPerDay !== undefined && c.day.used + admission.tokens > p.tokensPerDay) {
        return reject(check, "tokens_per_day", (c.day.index + 1) * DAY_MS - now);
      }
      if (p.concurrentRequests !== undefined && c.inFlight >= p.concurrentRequests) {
        return reject(check, "concurrent_requests", 1_000);
      }
    }
    for (const check of admission.checks) {
      const p = check.policy;
      const c = this.counter(check.counterKey, now);
      if (p.requestsPerMinute !== undefined) {
        c.bucket = this.refill(c, check, now) - 1;
        c.bucketAt = now;
      }
      c.minute.used += admission.tokens;
      c.day.used += admission.tokens;
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
      // Settle only inside the window the tokens were reserved in.
      if (c.minute.index === Math.floor(admission.nowMs / MINUTE_MS)) c.minute.used += delta;
      if (c.day.index === Math.floor(admission.nowMs / DAY_MS)) c.day.used += delta;
      c.inFlight = Math.max(0, c.inFlight - 1);
    }
  }

  async close(): Promise<void> {}
}
