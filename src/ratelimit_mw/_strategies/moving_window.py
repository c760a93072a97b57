"""The moving window: a log of hit times, the limit over the last window. No I/O.

``limits``' layout: one list of timestamps per limit, newest first, trimmed to the amount.
Integers per limit: allowed, the count in the window after, milliseconds until the oldest
entry leaves the window (the reset), milliseconds until a request of this cost would fit
(0 when allowed).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from .._core import Plan, PlanItem, Quota
from .base import MemoryBase, MemoryTable, StrategySpec, single_key

__all__ = ["MOVING_WINDOW"]

_LUA = """
local now = now_ms / 1000
local function read(k, amount, expiry, cost, extra)
  local start = now - expiry
  -- entries are newest first: binary search for the last one still in the window
  local lo, hi, last = 0, redis.call('LLEN', KEYS[k]) - 1, -1
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    local stamp = tonumber(redis.call('LINDEX', KEYS[k], mid))
    if stamp and stamp >= start then last = mid; lo = mid + 1 else hi = mid - 1 end
  end
  return last + 1, last + 1 + cost <= amount
end
local function write(k, count, fits, admit, amount, expiry, cost, extra)
  local retry = 0
  if not fits then
    -- room for `cost` once the entry at index amount - cost has left the window
    local stamp = cost <= amount and tonumber(redis.call('LINDEX', KEYS[k], amount - cost))
    retry = stamp and math.max(0, math.ceil((stamp + expiry - now) * 1000)) or expiry * 1000
  end
  if admit then
    local stamps = {}
    for j = 1, cost do stamps[j] = string.format('%.6f', now) end
    for j = 1, cost, 5000 do
      redis.call('LPUSH', KEYS[k], unpack(stamps, j, math.min(j + 4999, cost)))
    end
    redis.call('LTRIM', KEYS[k], 0, amount - 1)
    redis.call('EXPIRE', KEYS[k], expiry)
    count = count + cost
  end
  local reset = expiry * 1000
  if count > 0 then
    local oldest = tonumber(redis.call('LINDEX', KEYS[k], count - 1))
    if oldest then reset = math.max(0, math.ceil((oldest + expiry - now) * 1000)) end
  end
  return {fits and 1 or 0, count, reset, retry}
end
"""


# A reservation is its cost's entries stamped with the decision's time: a refund removes
# those (what is gone has left the window already), a debt adds entries stamped now. The
# log keeps at most `amount` entries, so a debt never outlasts one full window.
_SETTLE = """
local function settle(k, amount, expiry, delta, at, mark, extra)
  if delta < 0 then
    redis.call('LREM', KEYS[k], delta, string.format('%.6f', at / 1000))
    return
  end
  local stamps = {}
  for j = 1, delta do stamps[j] = string.format('%.6f', now_ms / 1000) end
  for j = 1, delta, 5000 do
    redis.call('LPUSH', KEYS[k], unpack(stamps, j, math.min(j + 4999, delta)))
  end
  redis.call('LTRIM', KEYS[k], 0, amount - 1)
  redis.call('EXPIRE', KEYS[k], expiry)
end
"""


class _Log:
    """A moving window's timestamps (ms, oldest first), at most *amount* of them."""

    __slots__ = ("stamps", "window")

    def __init__(self, amount: int, window: int) -> None:
        self.stamps: deque[int] = deque(maxlen=amount)
        self.window = window


class _Memory(MemoryBase):
    """Entries are `_Log` objects; stamps older than the window are dropped on read."""

    def read(self, table: MemoryTable, key: str, item: PlanItem, now: int,
             consume: bool) -> tuple[Any, bool]:
        entry = table.data.get(key)
        count = 0
        if entry is not None:
            stamps = entry.stamps
            start = now - item.limit.get_expiry() * 1000
            while stamps and stamps[0] < start:
                stamps.popleft()
            count = len(stamps)
        return entry, count + item.cost <= item.limit.amount

    def write(self, table: MemoryTable, key: str, item: PlanItem, state: Any, fits: bool,
              admit: bool, now: int) -> list[int]:
        entry = state
        amount, cost = item.limit.amount, item.cost
        window = item.limit.get_expiry() * 1000
        count = len(entry.stamps) if entry else 0
        retry = 0
        if not fits:
            # the (count + cost - amount)-th oldest entry must leave the window first
            retry = window if cost > amount or entry is None else max(
                0, entry.stamps[count + cost - amount - 1] + window - now)
        if admit:
            if entry is None:
                entry = table.data[key] = _Log(amount, window)
                table.file(key, now + window)
            entry.stamps.extend([now] * cost)
            count = len(entry.stamps)
        reset = entry.stamps[0] + window - now if entry and entry.stamps else window
        return [int(fits), count, max(0, reset), retry]

    def expires(self, entry: Any) -> int:
        return int(entry.stamps[-1] + entry.window) if entry.stamps else 0

    def settle(self, table: MemoryTable, key: str, item: PlanItem, delta: int, at: int,
               mark: int, now: int) -> None:
        entry = table.data.get(key)
        if delta < 0:
            if entry is not None:
                for _ in range(min(-delta, entry.stamps.count(at))):
                    entry.stamps.remove(at)
            return
        if entry is None:
            window = item.limit.get_expiry() * 1000
            entry = table.data[key] = _Log(item.limit.amount, window)
        entry.stamps.extend([now] * delta)
        table.file(key, self.expires(entry))


def decode(plan: Plan, values: Sequence[int], now: float) -> tuple[Quota, ...]:
    """``allowed, count, reset_ms, retry_ms`` per limit."""
    quotas = []
    for index, item in enumerate(plan.items):
        allowed, count, reset_ms, retry_ms = values[4 * index:4 * index + 4]
        quotas.append(Quota(bool(allowed), item.limit, max(0, item.limit.amount - count),
                            now + reset_ms / 1000, 0.0 if allowed else retry_ms / 1000))
    return tuple(quotas)


MOVING_WINDOW = StrategySpec("moving-window", _LUA, decode, _Memory(), single_key,
                             "MovingWindowRateLimiter", _SETTLE, width=4)
