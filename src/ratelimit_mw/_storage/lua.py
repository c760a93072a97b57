"""Lua scripts that check every limit of a request in one Redis round trip.

One script per strategy. Each takes the keys of all the limits of one request (they share
a hash tag, so they live in one Cluster slot) and decides all-or-nothing: if any limit
would be exceeded, nothing is consumed; otherwise every limit is consumed. Each returns,
per limit, the numbers the headers need, so no second read is made.

The keys and values are the ones ``limits`` itself writes for the same strategy (a string
counter with a TTL; a list of timestamps, newest first; the ``{key}`` / ``{key}/-1``
counter pair), so ``limits`` can still test, read and clear them.

Time is Redis's own (``TIME``): every app server then agrees on it, whatever its clock.
Times cross the wire as integer milliseconds (Lua numbers become integer replies).

ARGV for every script: ``n`` then, per limit, ``amount``, ``expiry`` (seconds), ``cost``.
"""

from __future__ import annotations

# Redis < 5 replicates scripts verbatim and refuses writes after TIME unless effects
# replication is switched on; on Redis >= 5 this is already the default and a no-op.
_PRELUDE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = tonumber(ARGV[1])
local function spec(i)
  return tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
end
"""

#: Per limit: allowed (0/1), count after, milliseconds until the window resets.
FIXED_WINDOW = _PRELUDE + """
local counts, ok = {}, true
for i = 1, n do
  local amount, expiry, cost = spec(i)
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if counts[i] + cost > amount then ok = false end
end
local out = {}
for i = 1, n do
  local amount, expiry, cost = spec(i)
  local count = counts[i]
  if ok then
    count = redis.call('INCRBY', KEYS[i], cost)
  end
  local ttl = redis.call('PTTL', KEYS[i])
  if ok and ttl < 0 then
    -- a new window (or a counter that lost its TTL): it ends one expiry from now
    redis.call('EXPIRE', KEYS[i], expiry)
    ttl = expiry * 1000
  elseif ttl < 0 then
    ttl = expiry * 1000
  end
  out[#out + 1] = (counts[i] + cost <= amount) and 1 or 0
  out[#out + 1] = count
  out[#out + 1] = ttl
end
return out
"""

#: Per limit: allowed, count in the window after, ms until the oldest entry leaves the
#: window (the reset), ms until a request of this cost would fit (0 when allowed).
MOVING_WINDOW = _PRELUDE + """
local now = now_ms / 1000
local counts, ok = {}, true
for i = 1, n do
  local amount, expiry, cost = spec(i)
  local start = now - expiry
  -- entries are newest first: binary search for the last one still in the window
  local lo, hi, last = 0, redis.call('LLEN', KEYS[i]) - 1, -1
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    local stamp = tonumber(redis.call('LINDEX', KEYS[i], mid))
    if stamp and stamp >= start then last = mid; lo = mid + 1 else hi = mid - 1 end
  end
  counts[i] = last + 1
  if counts[i] + cost > amount then ok = false end
end
local out = {}
for i = 1, n do
  local amount, expiry, cost = spec(i)
  local count = counts[i]
  local allowed = count + cost <= amount
  local retry = 0
  if not allowed then
    -- room for `cost` once the entry at index amount - cost has left the window
    local stamp = cost <= amount and tonumber(redis.call('LINDEX', KEYS[i], amount - cost))
    retry = stamp and math.max(0, math.ceil((stamp + expiry - now) * 1000)) or expiry * 1000
  end
  if ok then
    local stamps = {}
    for j = 1, cost do stamps[j] = string.format('%.6f', now) end
    for j = 1, cost, 5000 do
      redis.call('LPUSH', KEYS[i], unpack(stamps, j, math.min(j + 4999, cost)))
    end
    redis.call('LTRIM', KEYS[i], 0, amount - 1)
    redis.call('EXPIRE', KEYS[i], expiry)
    count = count + cost
  end
  local reset = expiry * 1000
  if count > 0 then
    local oldest = tonumber(redis.call('LINDEX', KEYS[i], count - 1))
    if oldest then reset = math.max(0, math.ceil((oldest + expiry - now) * 1000)) end
  end
  out[#out + 1] = allowed and 1 or 0
  out[#out + 1] = count
  out[#out + 1] = reset
  out[#out + 1] = retry
end
return out
"""

#: KEYS come in pairs per limit: previous window, current window (limits' layout).
#: Per limit: allowed, previous count, previous TTL ms, current count, current TTL ms.
SLIDING_WINDOW = _PRELUDE + """
local state, ok = {}, true
for i = 1, n do
  local amount, expiry, cost = spec(i)
  local prev_key, cur_key = KEYS[2 * i - 1], KEYS[2 * i]
  local window = expiry * 1000
  local cur_ttl = redis.call('PTTL', cur_key)
  if cur_ttl > 0 and cur_ttl < window then
    -- the current window has ended: it becomes the previous one, as limits does
    redis.call('RENAME', cur_key, prev_key)
    redis.call('SET', cur_key, 0, 'PX', cur_ttl + window)
  end
  local prev = tonumber(redis.call('GET', prev_key) or '0')
  local prev_ttl = math.max(0, redis.call('PTTL', prev_key))
  local cur = tonumber(redis.call('GET', cur_key) or '0')
  cur_ttl = math.max(0, redis.call('PTTL', cur_key))
  local weighted = math.floor(prev * prev_ttl / window) + cur
  state[i] = {prev, prev_ttl, cur, cur_ttl, weighted + cost <= amount}
  if weighted + cost > amount then ok = false end
end
local out = {}
for i = 1, n do
  local amount, expiry, cost = spec(i)
  local prev_key, cur_key = KEYS[2 * i - 1], KEYS[2 * i]
  local s = state[i]
  if ok then
    if redis.call('EXISTS', cur_key) == 1 then
      s[3] = redis.call('INCRBY', cur_key, cost)
    else
      redis.call('SET', cur_key, cost, 'PX', expiry * 2000)
      s[3] = cost
      s[4] = expiry * 2000
    end
  end
  out[#out + 1] = s[5] and 1 or 0
  out[#out + 1] = s[1]
  out[#out + 1] = s[2]
  out[#out + 1] = s[3]
  out[#out + 1] = s[4]
end
return out
"""
