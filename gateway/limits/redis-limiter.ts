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
  bucketCapacity,
  CONCURRENCY_LEASE_MS,
  DAY_MS,
  type Limiter,
  limitValueOf,
  MINUTE_MS,
  type Ticket,
} from "./limiter.ts";

// KEYS: four per check (bucket, minute window, day window, concurrency set).
// ARGV: now, request id, tokens, check count, minute window end, day window end, lease,
// then five per check: requestsPerMinute, capacity, tokensPerMinute, tokensPerDay, concurrentRequests (0 = none).
const ADMIT = `
local now = tonumber(ARGV[1])
local id = ARGV[2]
local tokens = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local minuteEnd = tonumber(ARGV[5])
local dayEnd = tonumber(ARGV[6])
local lease = tonumber(ARGV[7])
local function bucketNow(key, rpm, cap)
  local b = redis.call('HMGET', key, 't', 'ts')
  local t = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  return math.min(cap, t + elapsed * rpm / 60000)
end
for i = 0, n - 1 do
  local a = 8 + i * 5
  local rpm, cap, tpm, tpd, conc = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local k = i * 4
  if rpm > 0 then
    local t = bucketNow(KEYS[k+1], rpm, cap)
    if t < 1 then return {i, 1, math.ceil((1 - t) * 60000 / rpm)} end
  end
  if tpm > 0 and tonumber(redis.call('GET', KEYS[k+2]) or '0') + tokens > tpm then return {i, 2, minuteEnd - now} end
  if tpd > 0 and tonumber(redis.call('GET', KEYS[k+3]) or '0') + tokens > tpd then return {i, 3, dayEnd - now} end
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k+4], '-inf', now)
    if redis.call('ZCARD', KEYS[k+4]) >= conc then return {i, 4, 1000} end
  end
end
for i = 0, n - 1 do
  local a = 8 + i * 5
  local rpm, cap, tpm, tpd, conc = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local k = i * 4
  if rpm > 0 then
    local t = bucketNow(KEYS[k+1], rpm, cap)
    redis.call('HSET', KEYS[k+1], 't', tostring(t - 1), 'ts', now)
    redis.call('PEXPIRE', KEYS[k+1], math.ceil(cap * 60000 / rpm) + 1000)
  end
  if tpm > 0 then
    redis.call('INCRBY', KEYS[k+2], tokens)
    redis.call('PEXPIRE', KEYS[k+2], minuteEnd - now + 1000)
  end
  if tpd > 0 then
    redis.call('INCRBY', KEYS[k+3], tokens)
    redis.call('PEXPIRE', KEYS[k+3], dayEnd - now + 1000)
  end
  if conc > 0 then
    redis.call('ZADD', KEYS[k+4], now + lease, id)
    redis.call('PEXPIRE', KEYS[k+4], lease)
  end
end
return {-1}
`;

// KEYS: three per check (minute window, day window, concurrency set). ARGV: token delta, request id.
const FINISH = `
local delta = tonumber(ARGV[1])
for i = 1, #KEYS, 3 do
  if delta ~= 0 then
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], delta) end
    if redis.call('EXISTS', KEYS[i+1]) == 1 then redis.call('INCRBY', KEYS[i+1], delta) end
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

  private keysOf(counterKey: string, nowMs: number) {
    const base = `${this.prefix}${counterKey}`;
    return {
      bucket: `${base}:rpm`,
      minute: `${base}:tpm:${Math.floor(nowMs / MINUTE_MS)}`,
      day: `${base}:tpd:${Math.floor(nowMs / DAY_MS)}`,
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
      (Math.floor(now / MINUTE_MS) + 1) * MINUTE_MS,
      (Math.floor(now / DAY_MS) + 1) * DAY_MS,
      CONCURRENCY_LEASE_MS,
    ];
    for (const check of admission.checks) {
      const k = this.keysOf(check.counterKey, now);
      keys.push(k.bucket, k.minute, k.day, k.concurrency);
      const p = check.policy;
      args.push(
        p.requestsPerMinute ?? 0,
        bucketCapacity(p),
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
      const k = this.keysOf(check.counterKey, admission.nowMs);
      keys.push(k.minute, k.day, k.concurrency);
    }
    if (keys.length === 0) return;
    try {
      await this.script("pomonaFinish")(keys.length, ...keys, delta, admission.requestId);
    } catch {
      // The slot's lease reclaims it; the tokens stay charged at the reservation.
      this.options.metrics.limiterFailures.inc({ mode: this.options.onFailure });
    }
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
