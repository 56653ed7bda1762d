/**
 * What a limiter does: admit a request against every limit that applies to it
 * in one atomic step (reserving its tokens and a concurrency slot), then
 * settle to the real token usage and free the slot when the request ends.
 *
 * Semantics, the same for the in-memory and the Redis limiter (docs/gateway.md):
 * - requests per minute, tokens per minute, tokens per day: sliding windows
 *   (sliding-window.ts). What was admitted in any window-length span, up to
 *   and including now, never exceeds the limit: no 2× at a window edge. The
 *   request window holds max(requestsPerMinute, burst) requests;
 * - burst, when set: also a token bucket of `burst` refilled at
 *   requestsPerMinute / 60 s, so at most `burst` requests arrive at once and
 *   the rest follow at the per-minute pace;
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

/**
 * A window is cut into this many slices; what was admitted in a slice counts until the slice's end is a
 * full window old. So a window counts between 1 and 1 + 1/SLICES window-lengths of the past, and steady
 * traffic gets at least SLICES / (SLICES + 1) of the limit (99.2 %).
 */
export const SLICES_PER_WINDOW = 120;
export const MINUTE_SLICE_MS = MINUTE_MS / SLICES_PER_WINDOW;
export const DAY_SLICE_MS = DAY_MS / SLICES_PER_WINDOW;

/** Requests the sliding minute window holds: the per-minute figure, or the burst when it is larger. */
export const requestWindowLimit = (p: GatewayPolicy) => Math.max(p.requestsPerMinute ?? 0, p.burst ?? 0);

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
