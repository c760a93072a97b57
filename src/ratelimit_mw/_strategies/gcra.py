"""GCRA, the generic cell rate algorithm: a token bucket kept as one timestamp. No I/O.

``"10/second"`` is a bucket of 10 that refills one every 100 ms: a burst of 10 passes at
once, then one request per emission interval ``T = window / amount``. A request of cost
``c`` moves the theoretical arrival time (TAT) to ``max(TAT, now) + c * T`` and is
admitted when that is at most ``burst * T`` ahead of now (the burst tolerance
``(burst - 1) * T`` plus its own interval). The burst is the amount unless the rule sets
one (``Rule(..., burst=N)``, the plan item's ``option``): ``"10/second"`` with burst 3
still sustains 10 a second, but never more than 3 at once.

Our layout (``limits`` has no GCRA): one string per limit under the ``limits`` key,
``"<ms>+<rem>/<amount>"``: the TAT is ``ms + rem / amount`` epoch milliseconds, exactly,
since ``T`` is a whole number of milliseconds only when the amount divides the window.
Its TTL is until the TAT, when the bucket is full again and the key means nothing.

Integers per limit: allowed, remaining (requests of cost 1 that would pass now, out of
the burst), ms
until one more would (0 when the bucket is full), ms until a request of this cost would
pass (0 when it fits), and how far the TAT is ahead of now (whole ms; what a settle
needs to know of a reservation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._core import Plan, PlanItem, Quota
from .base import MemoryBase, MemoryTable, StrategySpec, single_key

__all__ = ["GCRA"]

# Every product below is at most about amount * window (ms), far inside the doubles' exact
# integers, so Lua's arithmetic is the same as Python's. A cost above the amount never
# fits (it needs more than the whole bucket) and is not multiplied out.
_LUA = """
local function read(k, amount, expiry, cost, extra)
  local window, burst = expiry * 1000, extra > 0 and extra or amount
  local ms, rem = now_ms, 0
  local stored = redis.call('GET', KEYS[k])
  if stored then
    local tat, frac = string.match(stored, '^(%d+)%+(%d+)/')
    tat, frac = tonumber(tat), tonumber(frac)
    if tat and tat >= now_ms and (tat > now_ms or frac > 0) then ms, rem = tat, frac end
  end
  if cost > burst then return {ms, rem, 0, 0}, false end
  local total = rem + cost * window
  local new_ms, new_rem = ms + math.floor(total / amount), total % amount
  return {ms, rem, new_ms, new_rem}, (new_ms - now_ms) * amount + new_rem <= burst * window
end
local function write(k, s, fits, admit, amount, expiry, cost, extra)
  local window, burst = expiry * 1000, extra > 0 and extra or amount
  local ms, rem = s[1], s[2]
  if admit then
    ms, rem = s[3], s[4]
    local ttl = ms - now_ms
    if rem > 0 then ttl = ttl + 1 end
    redis.call('SET', KEYS[k], string.format('%d+%d/%d', ms, rem, amount), 'PX', ttl)
  end
  local owed = (ms - now_ms) * amount + rem
  local used = math.floor((owed + window - 1) / window)
  local reset = 0
  if used > 0 then
    local wait = owed - (used - 1) * window
    reset = math.floor((wait + amount - 1) / amount)
  end
  local retry = 0
  if not fits then
    if cost > burst then
      retry = window
    else
      local over = (s[3] - now_ms) * amount + s[4] - burst * window
      retry = math.floor((over + amount - 1) / amount)
    end
  end
  return {fits and 1 or 0, burst - used, reset, retry, ms - now_ms}
end
"""


# A reservation holds the intervals just before the TAT it left (at + mark); time drains
# them. A refund gives back at most what it still holds (never room that later requests
# took, never past a full bucket); a debt moves the TAT on from max(TAT, now), as a hit
# does, past the burst if need be. Computed relative to now, in 1/amount ms, as `write`.
_SETTLE = """
local function settle(k, amount, expiry, delta, at, mark, extra)
  local window = expiry * 1000
  local owed = 0
  local stored = redis.call('GET', KEYS[k])
  if stored then
    local tat, frac = string.match(stored, '^(%d+)%+(%d+)/')
    tat, frac = tonumber(tat), tonumber(frac)
    if tat and (tat - now_ms) * amount + frac > 0 then owed = (tat - now_ms) * amount + frac end
  end
  if delta < 0 then
    delta = -math.min(-delta * window, math.max(0, at + mark - now_ms) * amount)
  else
    delta = delta * window
  end
  owed = owed + delta
  if owed <= 0 then
    redis.call('DEL', KEYS[k])
    return
  end
  local ms, rem = now_ms + math.floor(owed / amount), owed % amount
  local ttl = ms - now_ms
  if rem > 0 then ttl = ttl + 1 end
  redis.call('SET', KEYS[k], string.format('%d+%d/%d', ms, rem, amount), 'PX', ttl)
end
"""


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class _Memory(MemoryBase):
    """Entries ``[tat_ms, rem]``: the TAT is ``tat_ms + rem / amount``, as in Redis."""

    def read(self, table: MemoryTable, key: str, item: PlanItem, now: int,
             consume: bool) -> tuple[Any, bool]:
        amount, cost = item.limit.amount, item.cost
        window, burst = item.limit.get_expiry() * 1000, item.option or amount
        entry = table.data.get(key)
        ms, rem = now, 0
        if entry is not None and (entry[0] > now or (entry[0] == now and entry[1] > 0)):
            ms, rem = entry
        if cost > burst:
            return (entry, ms, rem, 0, 0), False
        new_ms, new_rem = divmod(rem + cost * window, amount)
        new_ms += ms
        return (entry, ms, rem, new_ms, new_rem), (
            (new_ms - now) * amount + new_rem <= burst * window)

    def write(self, table: MemoryTable, key: str, item: PlanItem, state: Any, fits: bool,
              admit: bool, now: int) -> list[int]:
        amount, cost = item.limit.amount, item.cost
        window, burst = item.limit.get_expiry() * 1000, item.option or amount
        entry, ms, rem, new_ms, new_rem = state
        if admit:
            ms, rem = new_ms, new_rem
            if entry is None:
                entry = table.data[key] = [ms, rem]
                table.file(key, self.expires(entry))
            else:  # still filed: the store re-files an entry whose expiry moved
                entry[:] = [ms, rem]
        owed = (ms - now) * amount + rem  # how far ahead the TAT is, in 1/amount ms
        used = _ceil_div(owed, window)
        reset = _ceil_div(owed - (used - 1) * window, amount) if used > 0 else 0
        retry = 0
        if not fits:
            retry = window if cost > burst else _ceil_div(
                (new_ms - now) * amount + new_rem - burst * window, amount)
        return [int(fits), burst - used, reset, retry, ms - now]

    def expires(self, entry: Any) -> int:
        return int(entry[0] + (entry[1] > 0))

    def settle(self, table: MemoryTable, key: str, item: PlanItem, delta: int, at: int,
               mark: int, now: int) -> None:
        amount, window = item.limit.amount, item.limit.get_expiry() * 1000
        entry = table.data.get(key)
        owed = 0 if entry is None else max(0, (entry[0] - now) * amount + entry[1])
        if delta < 0:
            owed -= min(-delta * window, max(0, at + mark - now) * amount)
        else:
            owed += delta * window
        if owed <= 0:
            table.data.pop(key, None)
            return
        ms, rem = divmod(owed, amount)
        if entry is None:
            entry = table.data[key] = [now + ms, rem]
        else:
            entry[:] = [now + ms, rem]
        table.file(key, self.expires(entry))


def decode(plan: Plan, values: Sequence[int], now: float) -> tuple[Quota, ...]:
    """``allowed, remaining, reset_ms, retry_ms, ahead_ms`` per limit.

    The reset is when the bucket next frees room (``remaining`` grows by one), like the
    moving window's; a full bucket has nothing to free and resets now.
    """
    quotas = []
    for index, item in enumerate(plan.items):
        allowed, remaining, reset_ms, retry_ms, _ahead = values[5 * index:5 * index + 5]
        quotas.append(Quota(bool(allowed), item.limit, max(0, remaining),
                            now + reset_ms / 1000, 0.0 if allowed else retry_ms / 1000))
    return tuple(quotas)


GCRA = StrategySpec("gcra", _LUA, decode, _Memory(), single_key, None, _SETTLE, width=5,
                    mark=4)
