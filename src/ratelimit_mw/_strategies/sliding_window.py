"""The sliding-window counter: two fixed windows, the previous one's share decaying. No I/O.

``limits``' layout: a ``{key}`` / ``{key}/-1`` counter pair per limit (current, previous).
The current counter lives two windows; once less than one window is left it becomes the
previous one. Integers per limit: allowed, previous count, previous TTL ms, current count,
current TTL ms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .._core import Plan, PlanItem, Quota
from .base import MemoryBase, MemoryTable, StrategySpec

__all__ = ["SLIDING_WINDOW_COUNTER", "sliding_retry_ms"]

_LUA = """
local function read(k, amount, expiry, cost, extra)
  local prev_key, cur_key = KEYS[k], KEYS[k + 1]
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
  return {prev, prev_ttl, cur, cur_ttl}, weighted + cost <= amount
end
local function write(k, s, fits, admit, amount, expiry, cost, extra)
  local cur_key = KEYS[k + 1]
  if admit then
    if redis.call('EXISTS', cur_key) == 1 then
      s[3] = redis.call('INCRBY', cur_key, cost)
    else
      redis.call('SET', cur_key, cost, 'PX', expiry * 2000)
      s[3] = cost
      s[4] = expiry * 2000
    end
  end
  return {fits and 1 or 0, s[1], s[2], s[3], s[4]}
end
"""


# The reservation went into the counter that then ended at at + mark (the current one;
# after a rollover the previous one, which keeps its TTL): a refund takes it back from
# whichever of the two still ends then, else from neither. A debt is a hit now.
_SETTLE = """
local function settle(k, amount, expiry, delta, at, mark, extra)
  local prev_key, cur_key = KEYS[k], KEYS[k + 1]
  if delta > 0 then
    if redis.call('EXISTS', cur_key) == 1 then
      redis.call('INCRBY', cur_key, delta)
    else
      redis.call('SET', cur_key, delta, 'PX', expiry * 2000)
    end
    return
  end
  for _, key in ipairs({cur_key, prev_key}) do
    local ttl = redis.call('PTTL', key)
    if ttl > 0 and math.abs(now_ms + ttl - at - mark) <= 2 then
      local count = tonumber(redis.call('GET', key) or '0')
      redis.call('SET', key, math.max(0, count + delta), 'KEEPTTL')
      return
    end
  end
end
"""


def _redis_keys(prefix: str, key: str) -> tuple[str, ...]:
    current = f"{prefix}:{{{key}}}"
    return (f"{current}/-1", current)


class _Memory(MemoryBase):
    """Entries ``[current, current_end_ms, previous, previous_end_ms]``."""

    def read(self, table: MemoryTable, key: str, item: PlanItem, now: int,
             consume: bool) -> tuple[Any, bool]:
        window = item.limit.get_expiry() * 1000
        entry = table.data.get(key)
        if entry is not None and entry[1] <= now:
            entry = None
        if entry is None:
            counts = (0, 0, 0, 0)
        else:
            current, current_end, previous, previous_end = entry
            if current_end - now < window:
                previous, previous_end = current, current_end
                current, current_end = 0, current_end + window
                if consume:  # the rollover is a write, as in Redis
                    entry[:] = [current, current_end, previous, previous_end]
            previous_ttl = max(0, previous_end - now)
            counts = (previous if previous_ttl else 0, previous_ttl, current,
                      current_end - now)
        weighted = counts[0] * counts[1] // window + counts[2]
        return (entry, counts), weighted + item.cost <= item.limit.amount

    def write(self, table: MemoryTable, key: str, item: PlanItem, state: Any, fits: bool,
              admit: bool, now: int) -> list[int]:
        entry, (previous, previous_ttl, current, current_ttl) = state
        if admit:
            if entry is None:
                life = 2 * item.limit.get_expiry() * 1000
                entry = table.data[key] = [0, now + life, 0, 0]
                table.file(key, now + life)
                current_ttl = life
            entry[0] += item.cost
            current = entry[0]
        return [int(fits), previous, previous_ttl, current, current_ttl]

    def expires(self, entry: Any) -> int:
        return int(entry[1])

    def settle(self, table: MemoryTable, key: str, item: PlanItem, delta: int, at: int,
               mark: int, now: int) -> None:
        entry = table.data.get(key)
        if entry is not None and entry[1] <= now:
            entry = None
        if delta > 0:
            if entry is None:
                life = 2 * item.limit.get_expiry() * 1000
                entry = table.data[key] = [0, now + life, 0, 0]
                table.file(key, now + life)
            entry[0] += delta
        elif entry is not None:
            for count, end in ((0, 1), (2, 3)):  # the current counter, then the previous
                if entry[end] == at + mark and entry[end] > now:
                    entry[count] = max(0, entry[count] + delta)
                    return


def sliding_retry_ms(amount: int, cost: int, window_ms: int, previous: int,
                     previous_ttl: int, current: int, current_ttl: int) -> float:
    """Milliseconds until a request of *cost* fits a sliding-window counter.

    A request fits when ``floor(previous * previous_ttl / window) + current + cost <=
    amount``. The previous window's share decays linearly; when the current window ends
    (its TTL drops below one window) it becomes the previous one with one window of TTL,
    and decays in turn. The floor makes each bound strict: one millisecond past it.
    """
    if cost > amount:
        return float(window_ms)
    room = amount - cost
    rollover = max(0, current_ttl - window_ms) if current_ttl else math.inf
    if current <= room and previous:
        # Wait until previous * (previous_ttl - t) / window < room - current + 1.
        wait = max(0.0, previous_ttl - window_ms * (room - current + 1) / previous) + 1
        if wait <= rollover:
            return wait
    if rollover is math.inf:
        return float(window_ms)  # nothing left to decay: cannot happen for a refusal
    # After the rollover: current * (window - s) / window < room + 1.
    bound = window_ms * (1 - (room + 1) / current) if current else -1.0
    return rollover + (bound + 1 if bound >= 0 else 0.0)


def decode(plan: Plan, values: Sequence[int], now: float) -> tuple[Quota, ...]:
    """``allowed, previous, previous_ttl_ms, current, current_ttl_ms`` per limit.

    ``remaining`` and the reset follow ``limits``' own ``get_window_stats`` for this
    strategy, so headers agree with what ``limits`` reports for the same keys.
    """
    quotas = []
    for index, item in enumerate(plan.items):
        allowed, previous, previous_ttl, current, current_ttl = values[5 * index:5 * index + 5]
        window_ms = item.limit.get_expiry() * 1000
        weighted = previous * previous_ttl / window_ms + current
        remaining = max(0, item.limit.amount - math.floor(weighted))
        if previous or current:
            # As limits: the sooner of one previous hit decaying away and the current
            # window ending. The end of the window is current_ttl less the one window the
            # counter outlives it by (limits' current_ttl % window is 0 for a window just
            # opened, where the end is what is meant).
            current_end = current_ttl - window_ms if current_ttl > window_ms else current_ttl
            reset_in = min(previous_ttl % (window_ms / previous) if previous else math.inf,
                           current_end if current else math.inf)
        else:
            reset_in = 0.0
        retry = 0.0 if allowed else sliding_retry_ms(
            item.limit.amount, item.cost, window_ms, previous, previous_ttl, current,
            current_ttl) / 1000
        quotas.append(Quota(bool(allowed), item.limit, remaining, now + reset_in / 1000,
                            retry))
    return tuple(quotas)


SLIDING_WINDOW_COUNTER = StrategySpec("sliding-window-counter", _LUA, decode, _Memory(),
                                      _redis_keys, "SlidingWindowCounterRateLimiter",
                                      _SETTLE, width=5, mark=4)
