/**
 * Limits shared by every gateway replica through Redis. One Lua script checks every applicable limit and,
 * only if all pass, takes from each: one round trip per admission, atomic across replicas. The same call
 * first settles the requests that ended since the last one (tokens charged to real usage, concurrency
 * slots freed), so ending a request costs no round trip of its own and never delays an answer; when no
 * admission comes within SETTLE_DELAY_MS, the settlements go alone. Clocks: the gateway passes its own
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
// Spliced into a script after its locals now and slices (Redis refuses global variables). Every redis.call
// is most of a script's cost, so each step makes as few as it can: 'h' and 's' are read together, the head
// read by windowUsed is handed to windowAdd, and the expiry is pushed on only when a slice starts.
const WINDOW = `
local function windowUsed(key, g)
  local hs = redis.call('HMGET', key, 'h', 's')
  local head = tonumber(hs[1])
  if not head then return 0, nil end
  local cutoff = math.floor(now / g) - slices
  if cutoff > head then
    if cutoff > head + slices then
      redis.call('DEL', key)
      return 0, nil
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
    if freed ~= 0 then return redis.call('HINCRBY', key, 's', -freed), cutoff end
    return tonumber(hs[2] or '0'), cutoff
  end
  return tonumber(hs[2] or '0'), head
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
-- head: what windowUsed returned for this key at this now (nil: the hash does not exist).
local function windowAdd(key, g, amount, head)
  local current = math.floor(now / g)
  if not head then
    head = current - slices
    redis.call('HSET', key, 'h', tostring(head))
  end
  local inSlice = redis.call('HINCRBY', key, tostring(math.max(current, head)), amount)
  redis.call('HINCRBY', key, 's', amount)
  -- Two windows from a slice's first admission: the hash outlives its newest slice even if a gateway's
  -- clock runs a little behind.
  if inSlice == amount then redis.call('PEXPIRE', key, 2 * g * slices + 1000) end
end
`;

// Settles requests that ended: charges their real token usage instead of the reservation, in the slice of
// their admission (a slice that has left its window, its field gone, is not corrected: those tokens no
// longer count), and frees their concurrency slots. Runs first in every admission, so a slot freed by
// this gateway counts as free for its next request.
// ARGV from position p: the settlement count, then per settlement its token delta, request id, minute
// slice, day slice and check count c; KEYS from position k: 3 per check (token minute window, token day
// window, concurrency set). Returns the positions after them.
const SETTLE = `
local function settleAll(p, k)
  local m = tonumber(ARGV[p])
  p = p + 1
  for j = 1, m do
    local delta, id, ms, ds, c = tonumber(ARGV[p]), ARGV[p+1], ARGV[p+2], ARGV[p+3], tonumber(ARGV[p+4])
    p = p + 5
    for i = 1, c do
      if delta ~= 0 then
        if redis.call('HEXISTS', KEYS[k], ms) == 1 then
          redis.call('HINCRBY', KEYS[k], ms, delta)
          redis.call('HINCRBY', KEYS[k], 's', delta)
        end
        if redis.call('HEXISTS', KEYS[k+1], ds) == 1 then
          redis.call('HINCRBY', KEYS[k+1], ds, delta)
          redis.call('HINCRBY', KEYS[k+1], 's', delta)
        end
      end
      redis.call('ZREM', KEYS[k+2], id)
      k = k + 3
    end
  end
  return p, k
end
`;

// KEYS: five per check (burst bucket, request window, token minute window, token day window, concurrency set),
// then the settlements' keys.
// ARGV: now, request id, tokens, check count, slices per window, minute slice ms, day slice ms, lease,
// then five per check: requestsPerMinute, burst, tokensPerMinute, tokensPerDay, concurrentRequests (0 = none),
// then the settlements (SETTLE). With no checks it only settles.
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
${SETTLE}
settleAll(9 + n * 5, n * 5 + 1)
local function bucketNow(key, rpm, cap)
  local b = redis.call('HMGET', key, 't', 'ts')
  local t = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  return math.min(cap, t + elapsed * rpm / 60000)
end
-- What the checks read, for the second pass: bucket levels and window heads, per check.
local bucket, rw, tw, dw = {}, {}, {}, {}
for i = 0, n - 1 do
  local a = 9 + i * 5
  local rpm, burst, tpm, tpd, conc = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local k = i * 5
  if rpm > 0 then
    if burst > 0 then
      local t = bucketNow(KEYS[k+1], rpm, burst)
      if t < 1 then return {i, 1, math.ceil((1 - t) * 60000 / rpm)} end
      bucket[i] = t
    end
    local limit = math.max(rpm, burst)
    local used, head = windowUsed(KEYS[k+2], minuteSlice)
    if used + 1 > limit then return {i, 1, windowRetryAfter(KEYS[k+2], minuteSlice, 1, limit, used)} end
    rw[i] = head or false
  end
  if tpm > 0 then
    local used, head = windowUsed(KEYS[k+3], minuteSlice)
    if used + tokens > tpm then return {i, 2, windowRetryAfter(KEYS[k+3], minuteSlice, tokens, tpm, used)} end
    tw[i] = head or false
  end
  if tpd > 0 then
    local used, head = windowUsed(KEYS[k+4], daySlice)
    if used + tokens > tpd then return {i, 3, windowRetryAfter(KEYS[k+4], daySlice, tokens, tpd, used)} end
    dw[i] = head or false
  end
  if conc > 0 then
    -- Expired leases (slots of a gateway that died) are dropped only when they could make a difference.
    if redis.call('ZCARD', KEYS[k+5]) >= conc then
      redis.call('ZREMRANGEBYSCORE', KEYS[k+5], '-inf', now)
      if redis.call('ZCARD', KEYS[k+5]) >= conc then return {i, 4, 1000} end
    end
  end
end
for i = 0, n - 1 do
  local a = 9 + i * 5
  local rpm, burst, tpm, tpd, conc = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local k = i * 5
  if rpm > 0 then
    if burst > 0 then
      redis.call('HSET', KEYS[k+1], 't', tostring(bucket[i] - 1), 'ts', now)
      redis.call('PEXPIRE', KEYS[k+1], math.ceil(burst * 60000 / rpm) + 1000)
    end
    windowAdd(KEYS[k+2], minuteSlice, 1, rw[i] or nil)
  end
  if tpm > 0 then windowAdd(KEYS[k+3], minuteSlice, tokens, tw[i] or nil) end
  if tpd > 0 then windowAdd(KEYS[k+4], daySlice, tokens, dw[i] or nil) end
  if conc > 0 then
    redis.call('ZADD', KEYS[k+5], now + lease, id)
    redis.call('PEXPIRE', KEYS[k+5], lease)
  end
end
return {-1}
`;

const KINDS: LimitKind[] = ["requests", "tokens_per_minute", "tokens_per_day", "concurrent_requests"];

type ScriptRunner = (numKeys: number, ...args: (string | number)[]) => Promise<unknown>;

/**
 * Settlements wait at most this long for the next admission to carry them; a lone one then goes alone.
 * So a slot freed here is free for other gateways within about this much (it is free for this gateway's
 * next admission at once, which settles before it checks).
 */
export const SETTLE_DELAY_MS = 1;
/** Settlements carried by one script call at most: bounds the call's size and the queue. */
export const SETTLE_BATCH = 64;

interface Settlement {
  /** The keys it touches (3 per check) and its 5 arguments, as the script takes them. */
  keys: string[];
  args: (string | number)[];
}

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
  private readonly admitScript: ScriptRunner;
  /** Ended requests not yet settled in Redis, oldest first, at most SETTLE_BATCH. */
  private pending: Settlement[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private lastFlush: Promise<void> = Promise.resolve();

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
    // ioredis sends the script's text once per connection, then only its SHA1 (EVALSHA).
    this.redis.defineCommand("pomonaAdmit", { lua: ADMIT });
    this.admitScript = (this.redis as unknown as Record<string, ScriptRunner>).pomonaAdmit!.bind(this.redis);
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

  /** One script call: the pending settlements, then the admission's checks (none: the call only settles). */
  private call(admission: Admission | undefined): Promise<unknown> {
    const checks = admission?.checks ?? [];
    const keys: string[] = [];
    const args: (string | number)[] = [
      admission?.nowMs ?? 0,
      admission?.requestId ?? "",
      admission?.tokens ?? 0,
      checks.length,
      SLICES_PER_WINDOW,
      MINUTE_SLICE_MS,
      DAY_SLICE_MS,
      CONCURRENCY_LEASE_MS,
    ];
    for (const check of checks) {
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
    const settlements = this.takePending();
    args.push(settlements.length);
    for (const s of settlements) {
      keys.push(...s.keys);
      args.push(...s.args);
    }
    return this.admitScript(keys.length, ...keys, ...args);
  }

  private takePending(): Settlement[] {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const taken = this.pending;
    this.pending = [];
    return taken;
  }

  async admit(admission: Admission): Promise<AdmissionResult> {
    let result: unknown;
    try {
      result = await this.call(admission);
    } catch {
      // Settlements that went with it are lost: slots come back with their lease, tokens stay charged.
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

  /**
   * Queues the settlement; it reaches Redis with this gateway's next admission (one round trip for both)
   * or alone after SETTLE_DELAY_MS, so it never delays an answer. Resolves once queued: this limiter's next
   * admission sees it.
   */
  async finish(ticket: Ticket, actualTokens: number | undefined): Promise<void> {
    if (ticket.unlimited || ticket.admission.checks.length === 0) return;
    const { admission } = ticket;
    const keys: string[] = [];
    for (const check of admission.checks) {
      const k = this.keysOf(check.counterKey);
      keys.push(k.minute, k.day, k.concurrency);
    }
    this.pending.push({
      keys,
      args: [
        actualTokens === undefined ? 0 : actualTokens - admission.tokens,
        admission.requestId,
        Math.floor(admission.nowMs / MINUTE_SLICE_MS),
        Math.floor(admission.nowMs / DAY_SLICE_MS),
        admission.checks.length,
      ],
    });
    if (this.pending.length >= SETTLE_BATCH) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), SETTLE_DELAY_MS);
  }

  /** Sends the pending settlements on their own. */
  private flush(): void {
    if (this.pending.length === 0) return;
    this.lastFlush = this.call(undefined).then(
      () => undefined,
      () => {
        // The slots' leases reclaim them; the tokens stay charged at the reservation.
        this.options.metrics.limiterFailures.inc({ mode: this.options.onFailure });
      },
    );
  }

  async close(): Promise<void> {
    this.flush();
    await this.lastFlush;
    this.redis.disconnect();
  }
}
