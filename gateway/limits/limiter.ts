/**
 * What a limiter does: admit a request against every limit that applies to it
 * in one atomic step (reserving its tokens and a concurrency slot), then
 * settle to the real token usage and free the slot when the request ends.
 *
 * Semantics, the same for the in-memory and the Redis limiter:
 * - requests per minute: a token bucket holding `burst` (default the per-minute
 *   figure), refilled at requestsPerMinute / 60 s;
 * - tokens per minute and per day: fixed windows (UTC minute, UTC day); the
 *   reservation must fit in what is left of the window;
 * - concurrent requests: slots held until the request ends (in Redis with a
 *   lease, so a crashed gateway does not hold them for ever).
 */
import type { GatewayPolicy } from "../../crds/api/index.ts";
import type { LimitKind } from "../errors.ts";

export interface LimitCheck {
  policy: GatewayPolicy;
  /** Which budget this counts against: the policy and the key and/or model it is counted for. */
  counterKey: string;
}

export interface Admission {
  requestId: string;
  checks: LimitCheck[];
  /** Prompt estimate plus max_tokens, reserved up front. */
  tokens: number;
  nowMs: number;
}

export interface Ticket {
  readonly admission: Admission;
  /** True when the shared store could not be asked and the request was let through unlimited. */
  readonly unlimited: boolean;
}

export interface Rejection {
  check: LimitCheck;
  limit: LimitKind;
  limitValue: number;
  retryAfterMs: number;
}

export type AdmissionResult = { ok: true; ticket: Ticket } | { ok: false; rejection: Rejection };

export interface Limiter {
  admit(admission: Admission): Promise<AdmissionResult>;
  /** Charge the real usage instead of the reservation (undefined keeps the reservation) and free the slot. */
  finish(ticket: Ticket, actualTokens: number | undefined): Promise<void>;
  close(): Promise<void>;
}

export const MINUTE_MS = 60_000;
export const DAY_MS = 86_400_000;
/** A concurrency slot in Redis is reclaimed after this long even if its gateway died holding it. */
export const CONCURRENCY_LEASE_MS = 15 * MINUTE_MS;

export const bucketCapacity = (p: GatewayPolicy) => p.burst ?? p.requestsPerMinute ?? 0;

export function limitValueOf(p: GatewayPolicy, kind: LimitKind): number {
  switch (kind) {
    case "requests":
      return p.requestsPerMinute ?? 0;
    case "tokens_per_minute":
      return p.tokensPerMinute ?? 0;
    case "tokens_per_day":
      return p.tokensPerDay ?? 0;
    case "concurrent_requests":
      return p.concurrentRequests ?? 0;
  }
}
