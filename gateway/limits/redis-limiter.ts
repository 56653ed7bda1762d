/**
 * Limits shared by every gateway replica through Redis. One Lua script checks
 * every applicable limit and, only if all pass, takes from each: one round
 * trip per admission, atomic across replicas. A second script settles the
 * tokens and frees the concurrency slot. Clocks: the gateway passes its own
 * time, so replicas must keep their clocks in sync (NTP), as they do anyway.
 */
import { Redis } from "ioredis";
import type { LimitKind } from "../errors.ts";
import type { GatewayMetrics } from "../metrics.ts";
import {
  type Admission,
  type AdmissionResult,
  CONCURRENCY_LEASE_MS,
  DAY_SLICE_MS,
  type Limiter,
  limitValueOf,
  MINUTE_SLICE_MS,
  SLICES_PER_WINDOW,
  type Ticket,
} from "./limiter.ts";

// The sliding windows of sliding-window.ts, step for step, on a hash per window: field 'h' is the oldest
// slice still counted, 's' the sum of the kept slices, and one field per non-empty slice (its index).
// Spliced into a script after its locals now and slices (Redis refuses global variables).
const WINDOW = `
local function windowUsed(key, g)
  local head = tonumber(redis.call('HGET', key, 'h'))
  if not head then return 0 end
  local cutoff = math.floor(now / g) - slices
  if cutoff > head then
    if cutoff > head + slices then
      redis.call('DEL', key)
      return 0
    end
    local freed = 0
    for b = head, cutoff - 1 do
      local v = redis.call('HGET', key, tostring(b))
      if v then
        freed = freed + tonumber(v)
        redis.call('HDEL', key, tostring(b))
      end
    end
    redis.call('HSET', key, 'h', tostring(cutoff))
    if freed ~= 0 then return redis.call('HINCRBY', key, 's', -freed) end
  end
  return tonumber(redis.call('HGET', key, 's') or '0')
end
local function windowRetryAfter(key, g, amount, limit, sum)
  local w = g * slices
  local head = tonumber(redis.call('HGET', key, 'h'))
  if amount > limit or not head then return w end
  local freed = 0
  for b = head, head + slices do
    freed = freed + tonumber(redis.call('HGET', key, tostring(b)) or '0')
    if sum - freed + amount <= limit then return (b + 1) * g + w - now end
  end
  return w
end
local function windowAdd(key, g, amount)
  local current = math.floor(now / g)
  local head = tonumber(redis.call('HGET', key, 'h'))
  if not head then
    head = current - slices
    redis.call('HSET', key, 'h', tostring(head))
  end
  redis.call('HINCRBY', key, tostring(math.max(current, head)), amount)
  redis.call('HINCRBY', key, 's', amount)
  -- Two windows: the hash outlives its newest slice even if a gateway's clock runs a little behind.
  redis.call('PEXPIRE', key, 2 * g * slices + 1000)
end
`;

// KEYS: five per check (burst bucket, request window, token minute window, token day window, concurrency set).
// ARGV: now, request id, tokens, check count, slices per window, minute slice ms, day slice ms, lease,
// then five per check: requestsPerMinute, burst, tokensPerMinute, tokensPerDay, concurrentRequests (0 = none).
const ADMIT = `
local now = tonumber(ARGV[1])
local id = ARGV[2]
local tokens = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local slices = tonumber(ARGV[5])
local minuteSlice = tonumber(ARGV[6])
local daySlice = tonumber(ARGV[7])
local lease = tonumber(ARGV[8])
${WINDOW}
local function bucketNow(key, rpm, cap)
  local b = redis.call('HMGET', key, 't', 'ts')
  local t = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  return math.min(cap, t + elapsed * rpm / 60000)
end
for i = 0, n - 1 do
  local a = 9 + i * 5
  local rpm, burst, tpm, tpd, conc = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local k = i * 5
  if rpm > 0 then
    if burst > 0 then
      local t = bucketNow(KEYS[k+1], rpm, burst)
      if t < 1 then return {i, 1, math.ceil((1 - t) * 60000 / rpm)} end
    end
    local limit = math.max(rpm, burst)
    local used = windowUsed(KEYS[k+2], minuteSlice)
    if used + 1 > limit then return {i, 1, windowRetryAfter(KEYS[k+2], minuteSlice, 1, limit, used)} end
  end
  if tpm > 0 then
    local used = windowUsed(KEYS[k+3], minuteSlice)
    if used + tokens > tpm then return {i, 2, windowRetryAfter(KEYS[k+3], minuteSlice, tokens, tpm, used)} end
  end
  if tpd > 0 then
    local used = windowUsed(KEYS[k+4], daySlice)
    if used + tokens > tpd then return {i, 3, windowRetryAfter(KEYS[k+4], daySlice, tokens, tpd, used)} end
  end
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k+5], '-inf', now)
    if redis.call('ZCARD', KEYS[k+5]) >= conc then return {i, 4, 1000} end
  end
end
for i = 0, n - 1 do
  local a = 9 + i * 5
  local rpm, burst, tpm, tpd, conc = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local k = i * 5
  if rpm > 0 then
    if burst > 0 then
      local t = bucketNow(KEYS[k+1], rpm, burst)
      redis.call('HSET', KEYS[k+1], 't', tostring(t - 1), 'ts', now)
      redis.call('PEXPIRE', KEYS[k+1], math.ceil(burst * 60000 / rpm) + 1000)
    end
    windowAdd(KEYS[k+2], minuteSlice, 1)
  end
  if tpm > 0 then windowAdd(KEYS[k+3], minuteSlice, tokens) end
  if tpd > 0 then windowAdd(KEYS[k+4], daySlice, tokens) end
  if conc > 0 then
    redis.call('ZADD', KEYS[k+5], now + lease, id)
    redis.call('PEXPIRE', KEYS[k+5], lease)
  end
end
return {-1}
`;

// KEYS: three per check (token minute window, token day window, concurrency set).
// ARGV: token delta, request id, the admission's minute slice, its day slice.
// A slice that has left its window (its field is gone) is not corrected: those tokens no longer count.
const FINISH = `
local delta = tonumber(ARGV[1])
for i = 1, #KEYS, 3 do
  if delta ~= 0 then
    if redis.call('HEXISTS', KEYS[i], ARGV[3]) == 1 then
      redis.call('HINCRBY', KEYS[i], ARGV[3], delta)
      redis.call('HINCRBY', KEYS[i], 's', delta)
    end
    if redis.call('HEXISTS', KEYS[i+1], ARGV[4]) == 1 then
      redis.call('HINCRBY', KEYS[i+1], ARGV[4], delta)
      redis.call('HINCRBY', KEYS[i+1], 's', delta)
    end
  end
  redis.call('ZREM', KEYS[i+2], ARGV[2])
end
return 0
`;

const KINDS: LimitKind[] = ["requests", "tokens_per_minute", "tokens_per_day", "concurrent_requests"];

type ScriptRunner = (numKeys: number, ...args: (string | number)[]) => Promise<unknown>;

export interface RedisLimiterOptions {
  url: string;
  onFailure: "allow" | "deny";
  metrics: GatewayMetrics;
  /** Prefix of every key, so several Pomona installations can share one Redis. */
  prefix?: string;
}

export class LimitsUnavailable extends Error {
  readonly code = "LIMITS_UNAVAILABLE";
}

export class RedisLimiter implements Limiter {
  private readonly redis: Redis;
  private readonly options: RedisLimiterOptions;
  private readonly prefix: string;

  constructor(options: RedisLimiterOptions) {
    this.options = options;
    this.prefix = options.prefix ?? "pomona:limits:";
    // Fail fast while Redis is away instead of queueing admissions behind a reconnect.
    this.redis = new Redis(options.url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 500,
      retryStrategy: (attempt) => Math.min(attempt * 100, 2_000),
    });
    this.redis.on("error", () => {
      // Reported per admission through the failure metric; ioredis reconnects by itself.
    });
    this.redis.defineCommand("pomonaAdmit", { lua: ADMIT });
    this.redis.defineCommand("pomonaFinish", { lua: FINISH });
    options.metrics.limiterFailureMode.set({ mode: options.onFailure }, 1);
  }

  /** Resolves true once connected, false if not within the time given (admissions then use the failure mode). */
  async connected(timeoutMs: number): Promise<boolean> {
    if (this.redis.status === "ready") return true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.redis.off("ready", onReady);
        resolve(false);
      }, timeoutMs);
      const onReady = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.redis.once("ready", onReady);
    });
  }

  private keysOf(counterKey: string) {
    const base = `${this.prefix}${counterKey}`;
    return {
      bucket: `${base}:burst`,
      requests: `${base}:rw`,
      minute: `${base}:tw`,
      day: `${base}:dw`,
      concurrency: `${base}:conc`,
    };
  }

  private script(name: "pomonaAdmit" | "pomonaFinish"): ScriptRunner {
    return (this.redis as unknown as Record<string, ScriptRunner>)[name]!.bind(this.redis);
  }

  async admit(admission: Admission): Promise<AdmissionResult> {
    const now = admission.nowMs;
    const keys: string[] = [];
    const args: (string | number)[] = [
      now,
      admission.requestId,
      admission.tokens,
      admission.checks.length,
      SLICES_PER_WINDOW,
      MINUTE_SLICE_MS,
      DAY_SLICE_MS,
      CONCURRENCY_LEASE_MS,
    ];
    for (const check of admission.checks) {
      const k = this.keysOf(check.counterKey);
      keys.push(k.bucket, k.requests, k.minute, k.day, k.concurrency);
      const p = check.policy;
      args.push(
        p.requestsPerMinute ?? 0,
        p.burst ?? 0,
        p.tokensPerMinute ?? 0,
        p.tokensPerDay ?? 0,
        p.concurrentRequests ?? 0,
      );
    }
    let result: unknown;
    try {
      result = await this.script("pomonaAdmit")(keys.length, ...keys, ...args);
    } catch {
      this.options.metrics.limiterFailures.inc({ mode: this.options.onFailure });
      if (this.options.onFailure === "deny") throw new LimitsUnavailable("the shared limiter cannot be reached");
      return { ok: true, ticket: { admission, unlimited: true } };
    }
    const [index, kind, retryAfterMs] = result as [number, number?, number?];
    if (index < 0) return { ok: true, ticket: { admission, unlimited: false } };
    const check = admission.checks[index]!;
    const limit = KINDS[(kind ?? 1) - 1] ?? "requests";
    return {
      ok: false,
      rejection: { check, limit, limitValue: limitValueOf(check.policy, limit), retryAfterMs: retryAfterMs ?? 1000 },
    };
  }

  async finish(ticket: Ticket, actualTokens: number | undefined): Promise<void> {
    if (ticket.unlimited) return;
    const { admission } = ticket;
    const delta = actualTokens === undefined ? 0 : actualTokens - admission.tokens;
    const keys: string[] = [];
    for (const check of admission.checks) {
      const k = this.keysOf(check.counterKey);
      keys.push(k.minute, k.day, k.concurrency);
    }
    if (keys.length === 0) return;
    const minuteSlice = Math.floor(admission.nowMs / MINUTE_SLICE_MS);
    const daySlice = Math.floor(admission.nowMs / DAY_SLICE_MS);
    try {
      await this.script("pomonaFinish")(keys.length, ...keys, delta, admission.requestId, minuteSlice, daySlice);
    } catch {
      // The slot's lease reclaims it; the tokens stay charged at the reservation.
      this.options.metrics.limiterFailures.inc({ mode: this.options.onFailure });
    }
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
