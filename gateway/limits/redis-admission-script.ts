/**
 * The one Lua script of the Redis limiter (redis-limiter.ts): settle what ended, give back unused leases,
 * check every applicable limit and take from each only if all pass, and lease fresh budget, atomically
 * across gateway replicas. Built from pieces that each mirror a part of the in-memory limiter.
 */
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
export const ADMIT = `
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
-- Check i's limits from its five arguments: requestsPerMinute, burst, tokensPerMinute, tokensPerDay, concurrentRequests.
local function limitsOf(i)
  local a = 10 + i * 5
  return tonumber(ARGV[a]), tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
end
-- What the checks read, for the second pass: bucket levels and window heads, per check.
local bucket, rw, tw, dw = {}, {}, {}, {}
for i = 0, n - 1 do
  local rpm, burst, tpm, tpd, conc = limitsOf(i)
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
  local rpm, burst, tpm, tpd, conc = limitsOf(i)
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
