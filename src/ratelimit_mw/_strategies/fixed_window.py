"""The fixed window: a counter per window that starts at the first hit. No I/O.

``limits``' layout: one string counter per limit with the window's TTL. Integers per
limit: allowed (0/1), the count after, milliseconds until the window resets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._core import Plan, PlanItem, Quota
from .base import MemoryBase, MemoryTable, StrategySpec, single_key

__all__ = ["FIXED_WINDOW"]

_LUA = """
local function read(k, amount, expiry, cost, extra)
  local count = tonumber(redis.call('GET', KEYS[k]) or '0')
  return count, count + cost <= amount
end
local function write(k, count, fits, admit, amount, expiry, cost, extra)
  if admit then
    count = redis.call('INCRBY', KEYS[k], cost)
  end
  local ttl = redis.call('PTTL', KEYS[k])
  if admit and ttl < 0 then
    -- a new window (or a counter that lost its TTL): it ends one expiry from now
    redis.call('EXPIRE', KEYS[k], expiry)
    ttl = expiry * 1000
  elseif ttl < 0 then
    ttl = expiry * 1000
  end
  return {fits and 1 or 0, count, ttl}
end
"""


# The reservation's window ends at at + mark (its TTL then): a counter that ends at
# another time is a later window, which a refund must not credit. Redis keeps expiries in
# whole ms and TIME is read to the ms, hence the 2 ms of slack; a later window ends at
# least a window later.
_SETTLE = """
local function settle(k, amount, expiry, delta, at, mark, extra)
  local ttl = redis.call('PTTL', KEYS[k])
  if delta > 0 then
    redis.call('INCRBY', KEYS[k], delta)
    if ttl < 0 then redis.call('EXPIRE', KEYS[k], expiry) end
  elseif ttl > 0 and math.abs(now_ms + ttl - at - mark) <= 2 then
    local count = tonumber(redis.call('GET', KEYS[k]) or '0')
    redis.call('SET', KEYS[k], math.max(0, count + delta), 'KEEPTTL')
  end
end
"""


class _Memory(MemoryBase):
    """Entries ``[count, expires_ms]``."""

    def read(self, table: MemoryTable, key: str, item: PlanItem, now: int,
             consume: bool) -> tuple[Any, bool]:
        entry = table.data.get(key)
        if entry is not None and entry[1] <= now:
            entry = None
        return entry, (entry[0] if entry else 0) + item.cost <= item.limit.amount

    def one(self, table: MemoryTable, key: str, item: PlanItem, now: int,
            consume: bool) -> list[int]:
        """`read` then `write` for a plan of one limit, fused: the default strategy's
        common case, so the same integers in one call."""
        entry = table.data.get(key)
        if entry is not None and entry[1] <= now:
            entry = None
        fits = (entry[0] if entry else 0) + item.cost <= item.limit.amount
        if fits and consume:
            if entry is None:
                expires = now + item.limit.get_expiry() * 1000
                entry = table.data[key] = [0, expires]
                table.file(key, expires)
            entry[0] += item.cost
        elif entry is None:
            return [int(fits), 0, item.limit.get_expiry() * 1000]
        return [int(fits), entry[0], entry[1] - now]

    def write(self, table: MemoryTable, key: str, item: PlanItem, state: Any, fits: bool,
              admit: bool, now: int) -> list[int]:
        entry = state
        window = item.limit.get_expiry() * 1000
        if admit:
            if entry is None:
                entry = table.data[key] = [0, now + window]
                table.file(key, now + window)
            entry[0] += item.cost
        if entry is None:
            return [int(fits), 0, window]
        return [int(fits), entry[0], entry[1] - now]

    def expires(self, entry: Any) -> int:
        return int(entry[1])

    def settle(self, table: MemoryTable, key: str, item: PlanItem, delta: int, at: int,
               mark: int, now: int) -> None:
        entry = table.data.get(key)
        live = entry is not None and entry[1] > now
        if delta > 0:
            if not live:
                window = item.limit.get_expiry() * 1000
                entry = table.data[key] = [0, now + window]
                table.file(key, now + window)
            entry[0] += delta  # type: ignore[index]
        elif live and entry[1] == at + mark:  # type: ignore[index]
            entry[0] = max(0, entry[0] + delta)  # type: ignore[index]


def decode(plan: Plan, values: Sequence[int], now: float) -> tuple[Quota, ...]:
    """``allowed, count, ttl_ms`` per limit."""
    items = plan.items
    if len(items) == 1:
        return (_quota(items[0], values[0], values[1], values[2], now),)
    return tuple(_quota(item, values[3 * index], values[3 * index + 1],
                        values[3 * index + 2], now) for index, item in enumerate(items))


def _quota(item: PlanItem, allowed: int, count: int, ttl_ms: int, now: float) -> Quota:
    wait = ttl_ms / 1000
    return Quota(bool(allowed), item.limit, max(0, item.limit.amount - count), now + wait,
                 0.0 if allowed else wait)


FIXED_WINDOW = StrategySpec("fixed-window", _LUA, decode, _Memory(), single_key,
                            "FixedWindowRateLimiter", _SETTLE, width=3, mark=2)
