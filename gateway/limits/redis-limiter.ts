/**
 * Limits shared by every gateway replica through Redis. Most admissions are decided in this process
 * against budget leased from Redis in advance (leases.ts); the others, and the first of each counter in a
 * slice, run one Lua script that checks every applicable limit and, only if all pass, takes from each,
 * atomic across replicas, and leases fresh budget in the same call. The same call first settles the
 * requests that ended since the last one (tokens charged to real usage, concurrency slots freed) and gives
 * back unused leases, so ending a request costs no round trip of its own and never delays an answer; when
 * no call comes within SETTLE_DELAY_MS, the settlements go alone. Clocks: the gateway passes its own time,
 * so replicas must keep their clocks in sync (NTP), as they do anyway.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import type { LimitKind } from "../errors.ts";
import type { GatewayMetrics } from "../metrics.ts";
import { daySliceOf, type Grant, LeaseBook, type LeaseOp } from "./leases.ts";
import {
  type Admission,
  type AdmissionResult,
  CONCURRENCY_LEASE_MS,
  DAY_SLICE_MS,
  type LimitCheck,
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
  -- One slice past now's: a lease taken ahead for the next slice.
  for b = head, head + slices + 1 do
    freed = freed + tonumber(redis.call('HGET', key, tostring(b)) or '0')
    if sum - freed + amount <= limit then return (b + 1) * g + w - now end
  end
  return w
end
-- head: what windowUsed returned for this key at this now (nil: the hash does not exist). at: the time
-- whose slice is charged, when not now (a lease taken ahead for the next slice).
local function windowAdd(key, g, amount, head, at)
  local current = math.floor(now / g)
  if not head then
    head = current - slices
    redis.call('HSET', key, 'h', tostring(head))
  end
  if at then current = math.floor(at / g) end
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

// Concurrency slots leased in blocks: a hash per counter, field <gateway> the slots that gateway holds and
// <gateway>:e when they expire (refreshed whenever it takes more), so a dead gateway's block is reclaimed
// after the lease like a request's slot. Needs the locals now, gw and lease.
const BLOCKS = `
local function blocksHeld(key)
  local all = redis.call('HGETALL', key)
  if #all == 0 then return 0 end
  local f = {}
  for j = 1, #all, 2 do f[all[j]] = all[j + 1] end
  local held = 0
  for name, v in pairs(f) do
    if string.sub(name, -2) ~= ':e' then
      if tonumber(f[name .. ':e'] or '0') < now then redis.call('HDEL', key, name, name .. ':e')
      else held = held + tonumber(v) end
    end
  end
  return held
end
-- Slots in use: requests' slots (the set) and gateways' blocks. Expired request slots are dropped only
-- when they could make a difference.
local function slotsBusy(set, blocks, limit, more)
  local busy = redis.call('ZCARD', set) + blocksHeld(blocks)
  if busy + more > limit then
    redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
    busy = redis.call('ZCARD', set) + blocksHeld(blocks)
  end
  return busy
end
`;

// Leases (leases.ts). Each op has 5 KEYS (request window, token minute window, token day window,
// concurrency set, concurrency blocks) and 16 ARGV: the minute and day slice its remainders were charged
// in, the requests, minute tokens, day tokens and slots it gives back, then the take: 0 none, 1 what it
// can, 2 at least one request's worth of each limit or nothing, 3 what it can, charged in the next minute
// slice (a lease taken ahead: checked against the window as it is now, which counts more); the request's
// tokens; what it wants of
// requests, minute tokens, day tokens and slots; the request window, token minute, token day and
// concurrency limits. Giving back is a refund into the slice the lease was charged in (nothing if that
// slice has left its window); taking is an admission of the amount, charged in now's slice.
const LEASE = `
local function giveBack(key, field, amount)
  if amount > 0 and redis.call('HEXISTS', key, field) == 1 then
    redis.call('HINCRBY', key, field, -amount)
    redis.call('HINCRBY', key, 's', -amount)
  end
end
local function giveBackAll(p, k)
  local m = tonumber(ARGV[p])
  p = p + 1
  for j = 1, m do
    local ms, ds = ARGV[p], ARGV[p+1]
    giveBack(KEYS[k], ms, tonumber(ARGV[p+2]))
    giveBack(KEYS[k+1], ms, tonumber(ARGV[p+3]))
    giveBack(KEYS[k+2], ds, tonumber(ARGV[p+4]))
    local slots = tonumber(ARGV[p+5])
    if slots > 0 then
      local held = tonumber(redis.call('HGET', KEYS[k+4], gw))
      if held and held > slots then redis.call('HSET', KEYS[k+4], gw, held - slots)
      elseif held then redis.call('HDEL', KEYS[k+4], gw, gw .. ':e') end
    end
    p = p + 16
    k = k + 5
  end
end
-- What a window can lease now: at most want, at most what is left under the limit; nothing if now's slice
-- is older than the window's head (a clock set back), where the charge would not land in now's slice.
local function windowRoom(key, g, want, limit)
  local used, head = windowUsed(key, g)
  if head and math.floor(now / g) < head then return 0, head end
  return math.max(0, math.min(want, limit - used)), head
end
local function takeAll(p, k)
  local m = tonumber(ARGV[p])
  p = p + 1
  local grants = {}
  for j = 1, m do
    local mode, tokens = tonumber(ARGV[p+6]), tonumber(ARGV[p+7])
    local wr, wt, wd, ws = tonumber(ARGV[p+8]), tonumber(ARGV[p+9]), tonumber(ARGV[p+10]), tonumber(ARGV[p+11])
    local lr, lt, ld, lc = tonumber(ARGV[p+12]), tonumber(ARGV[p+13]), tonumber(ARGV[p+14]), tonumber(ARGV[p+15])
    local gr, gt, gd, gs, hr, ht, hd = 0, 0, 0, 0, nil, nil, nil
    local ok = mode > 0
    local at = nil
    if mode == 3 then at = (math.floor(now / minuteSlice) + 1) * minuteSlice end
    local least = mode == 2 and 1 or 0
    local leastTokens = mode == 2 and math.max(1, tokens) or 0
    if ok and wr > 0 then
      gr, hr = windowRoom(KEYS[k], minuteSlice, wr, lr)
      ok = gr >= least
    end
    if ok and wt > 0 then
      gt, ht = windowRoom(KEYS[k+1], minuteSlice, wt, lt)
      ok = gt >= leastTokens
    end
    if ok and wd > 0 then
      gd, hd = windowRoom(KEYS[k+2], daySlice, wd, ld)
      ok = gd >= leastTokens
    end
    if ok and ws > 0 then
      gs = math.max(0, math.min(ws, lc - slotsBusy(KEYS[k+3], KEYS[k+4], lc, ws)))
      ok = gs >= least
    end
    if ok then
      if gr > 0 then windowAdd(KEYS[k], minuteSlice, gr, hr, at) end
      if gt > 0 then windowAdd(KEYS[k+1], minuteSlice, gt, ht, at) end
      if gd > 0 then windowAdd(KEYS[k+2], daySlice, gd, hd, at) end
      if gs > 0 then
        redis.call('HINCRBY', KEYS[k+4], gw, gs)
        redis.call('HSET', KEYS[k+4], gw .. ':e', now + lease)
        redis.call('PEXPIRE', KEYS[k+4], lease)
      end
    else
      gr, gt, gd, gs = 0, 0, 0, 0
    end
    grants[#grants + 1] = gr
    grants[#grants + 1] = gt
    grants[#grants + 1] = gd
    grants[#grants + 1] = gs
    p = p + 16
    k = k + 5
  end
  return grants
end
`;

// KEYS: six per check (burst bucket, request window, token minute window, token day window, concurrency
// set, concurrency blocks), then the settlements' keys, then the lease ops' keys.
// ARGV: now, request id, tokens, check count, slices per window, minute slice ms, day slice ms, lease,
// gateway id, then five per check: requestsPerMinute, burst, tokensPerMinute, tokensPerDay,
// concurrentRequests (0 = none), then the settlements (SETTLE), then the lease ops (LEASE). With no checks
// it only settles and leases. Returns {-1, then four grants per lease op} when admitted, else
// {check index, limit kind, retry after ms}.
const ADMIT = `
local now = tonumber(ARGV[1])
local id = ARGV[2]
local tokens = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local slices = tonumber(ARGV[5])
local minuteSlice = tonumber(ARGV[6])
local daySlice = tonumber(ARGV[7])
local lease = tonumber(ARGV[8])
local gw = ARGV[9]
${WINDOW}
${SETTLE}
${BLOCKS}
${LEASE}
local p, k = settleAll(10 + n * 5, n * 6 + 1)
giveBackAll(p, k)
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
  local a = 10 + i * 5
  local rpm, burst, tpm, tpd, conc = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local k = i * 6
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
  if conc > 0 and slotsBusy(KEYS[k+5], KEYS[k+6], conc, 1) >= conc then return {i, 4, 1000} end
end
for i = 0, n - 1 do
  local a = 10 + i * 5
  local rpm, burst, tpm, tpd, conc = tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
  local k = i * 6
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
local grants = takeAll(p, k)
table.insert(grants, 1, -1)
return grants
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
  /** Names this gateway's concurrency blocks in Redis. */
  private readonly id = randomUUID();
  private readonly leases = new LeaseBook();
  /** Tickets admitted against leases, not in Redis one by one. */
  private readonly leased = new WeakSet<Ticket>();
  /** Ended requests not yet settled in Redis and leases not yet given back, oldest first, at most SETTLE_BATCH. */
  private pending: Settlement[] = [];
  private returns: LeaseOp[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweepAt = Number.POSITIVE_INFINITY;
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
      blocks: `${base}:cb`,
    };
  }

  /**
   * One script call at `nowMs`: the pending settlements and lease returns, then the admission's checks (none:
   * the call only settles and leases), then the lease ops' takes.
   */
  private call(admission: Admission | undefined, ops: LeaseOp[], nowMs: number): Promise<unknown> {
    const checks = admission?.checks ?? [];
    const keys: string[] = [];
    const args: (string | number)[] = [
      nowMs,
      admission?.requestId ?? "",
      admission?.tokens ?? 0,
      checks.length,
      SLICES_PER_WINDOW,
      MINUTE_SLICE_MS,
      DAY_SLICE_MS,
      CONCURRENCY_LEASE_MS,
      this.id,
    ];
    for (const check of checks) {
      const k = this.keysOf(check.counterKey);
      keys.push(k.bucket, k.requests, k.minute, k.day, k.concurrency, k.blocks);
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
    const allOps = [...this.takeReturns(), ...ops];
    args.push(allOps.length);
    for (const op of allOps) {
      const k = this.keysOf(op.counterKey);
      keys.push(k.requests, k.minute, k.day, k.concurrency, k.blocks);
      const { back, take } = op;
      args.push(back.slice, daySliceOf(back.slice), back.requests, back.minute, back.day, back.slots);
      if (take) {
        const p = take.policy;
        const w = take.sizes;
        args.push(take.ahead ? 3 : take.strict ? 2 : 1, take.tokens, w.requests, w.minute, w.day, w.slots);
        args.push(p.requestsPerMinute ?? 0, p.tokensPerMinute ?? 0, p.tokensPerDay ?? 0, p.concurrentRequests ?? 0);
      } else args.push(0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    }
    // The returns taken from the queue come first: the grants of `ops` follow theirs.
    const skipped = allOps.length - ops.length;
    return this.admitScript(keys.length, ...keys, ...args).then((result) => {
      const r = result as number[];
      if (r[0] !== -1) return r;
      const grants: Grant[] = [];
      for (let i = 0; i < ops.length; i++) {
        const at = 1 + (skipped + i) * 4;
        grants.push([r[at] ?? 0, r[at + 1] ?? 0, r[at + 2] ?? 0, r[at + 3] ?? 0]);
      }
      return [-1, grants];
    });
  }

  private takePending(): Settlement[] {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const taken = this.pending;
    this.pending = [];
    return taken;
  }

  private takeReturns(): LeaseOp[] {
    const taken = this.returns;
    this.returns = [];
    return taken;
  }

  async admit(admission: Admission): Promise<AdmissionResult> {
    const back: LeaseOp[] = [];
    const local = this.leases.admitLocally(admission, back);
    if (back.length > 0) this.returns.push(...back);
    if (local) {
      if (back.length > 0) this.queued();
      const ticket: Ticket = { admission, unlimited: false };
      this.leased.add(ticket);
      const topUps = this.leases.topUps(admission);
      if (topUps.length > 0) void this.lease(topUps, admission.nowMs);
      return { ok: true, ticket };
    }
    const ops = this.leases.forAdmission(admission);
    let result: unknown;
    try {
      result = await this.call(admission, ops, admission.nowMs);
    } catch {
      // Settlements and returns that went with it are lost: slots come back with their lease, tokens stay charged.
      this.granted(ops, undefined, admission.nowMs);
      this.options.metrics.limiterFailures.inc({ mode: this.options.onFailure });
      if (this.options.onFailure === "deny") throw new LimitsUnavailable("the shared limiter cannot be reached");
      return { ok: true, ticket: { admission, unlimited: true } };
    }
    const [index, kind, retryAfterMs] = result as [number, unknown, number?];
    if (index < 0) {
      this.granted(ops, kind as Grant[], admission.nowMs);
      return { ok: true, ticket: { admission, unlimited: false } };
    }
    this.granted(ops, undefined, admission.nowMs);
    const check = admission.checks[index]!;
    const limit = KINDS[((kind as number | undefined) ?? 1) - 1] ?? "requests";
    return {
      ok: false,
      rejection: { check, limit, limitValue: limitValueOf(check.policy, limit), retryAfterMs: retryAfterMs ?? 1000 },
    };
  }

  /** Tops up leases in the background: no admission waits on it. */
  private async lease(ops: LeaseOp[], nowMs: number): Promise<void> {
    try {
      const [, grants] = (await this.call(undefined, ops, nowMs)) as [number, Grant[]];
      this.granted(ops, grants, nowMs);
    } catch {
      this.granted(ops, undefined, nowMs);
      this.options.metrics.limiterFailures.inc({ mode: this.options.onFailure });
    }
  }

  private granted(ops: LeaseOp[], grants: Grant[] | undefined, nowMs: number): void {
    if (ops.length === 0) return;
    this.giveBack(this.leases.granted(ops, grants, nowMs));
    // What was granted is due back at its slice's end (by this process's clock).
    if (grants) this.scheduleSweep(Date.now() + (Math.floor(nowMs / MINUTE_SLICE_MS) + 1) * MINUTE_SLICE_MS - nowMs);
  }

  /** Queues lease returns; they go with the next call, or alone within SETTLE_DELAY_MS. */
  private giveBack(ops: LeaseOp[]): void {
    if (ops.length === 0) return;
    this.returns.push(...ops);
    this.queued();
  }

  private queued(): void {
    if (this.pending.length + this.returns.length >= SETTLE_BATCH) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), SETTLE_DELAY_MS);
  }

  /** Gives back, at their slice's end, the leases nobody used up: the sweep runs at `at` unless due sooner. */
  private scheduleSweep(at: number | undefined): void {
    if (at === undefined || at >= this.sweepAt) return;
    clearTimeout(this.sweepTimer);
    this.sweepAt = at;
    this.sweepTimer = setTimeout(
      () => {
        this.sweepAt = Number.POSITIVE_INFINITY;
        this.sweepTimer = undefined;
        const back = this.leases.sweep();
        if (back.length > 0) {
          this.returns.push(...back);
          this.flush();
        }
        this.scheduleSweep(this.leases.nextSweepAt());
      },
      Math.max(0, at - Date.now()),
    );
    this.sweepTimer.unref();
  }

  /**
   * Queues the settlement; it reaches Redis with this gateway's next call (one round trip for both)
   * or alone after SETTLE_DELAY_MS, so it never delays an answer. Resolves once queued: this limiter's next
   * admission sees it. A request admitted against a lease settles into the lease while its slice lasts.
   */
  async finish(ticket: Ticket, actualTokens: number | undefined): Promise<void> {
    if (ticket.unlimited || ticket.admission.checks.length === 0) return;
    const { admission } = ticket;
    const delta = actualTokens === undefined ? 0 : actualTokens - admission.tokens;
    let checks: LimitCheck[] = admission.checks;
    if (this.leased.delete(ticket)) {
      const back: LeaseOp[] = [];
      checks = this.leases.finishLocal(admission, delta, back);
      this.returns.push(...back);
      if (checks.length === 0) {
        if (back.length > 0) this.queued();
        return;
      }
    }
    const keys: string[] = [];
    for (const check of checks) {
      const k = this.keysOf(check.counterKey);
      keys.push(k.minute, k.day, k.concurrency);
    }
    this.pending.push({
      keys,
      args: [
        delta,
        admission.requestId,
        Math.floor(admission.nowMs / MINUTE_SLICE_MS),
        Math.floor(admission.nowMs / DAY_SLICE_MS),
        checks.length,
      ],
    });
    this.queued();
  }

  /** Sends the pending settlements and lease returns on their own. */
  private flush(): void {
    if (this.pending.length + this.returns.length === 0) return;
    this.lastFlush = this.call(undefined, [], 0).then(
      () => undefined,
      () => {
        // The slots' leases reclaim them; the tokens stay charged at the reservation.
        this.options.metrics.limiterFailures.inc({ mode: this.options.onFailure });
      },
    );
  }

  async close(): Promise<void> {
    clearTimeout(this.sweepTimer);
    this.returns.push(...this.leases.sweep(true));
    this.flush();
    await this.lastFlush;
    this.redis.disconnect();
  }
}
