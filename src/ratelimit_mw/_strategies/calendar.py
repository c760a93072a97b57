"""Calendar windows: a fixed window that resets on the clock's boundaries. No I/O.

``Rule(..., align="calendar")``: ``"1000/day"`` resets at midnight (UTC, or the rule's
``tz=``), ``"100000/month"`` on the 1st, ``"100/hour"`` on the hour, whenever the first
request came. The window's end is computed by the app server (its clock and time-zone
database: a Lua script knows neither months nor time zones) and passed to the script as
the limit's extra integer (`window_end`).

Layout (``limits`` has no such window): one string per limit, ``"<count>@<end ms>"``.
A count whose end is not the current window's belongs to a window that has ended, and
counts as 0. The key lives until the end plus `GRACE_MS`, so that app servers whose
clocks lag a little still see the count. Integers per limit: allowed, the count after,
ms until the window ends (as the fixed window's, so its decoder serves both).
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import Any

from .._core import PlanItem
from .base import MemoryBase, MemoryTable, StrategySpec, single_key
from .fixed_window import decode

__all__ = ["ALIGNED_UNITS", "CALENDAR", "GRACE_MS", "window_end"]

#: How long a window's counter outlives its end, for app servers whose clocks lag.
GRACE_MS = 1000
#: The ``limits`` granularities a calendar window can be (one unit each).
ALIGNED_UNITS = ("second", "minute", "hour", "day", "month", "year")

_UTC = timezone.utc
_lock = threading.Lock()
#: (unit, zone) -> (start ms, end ms) of the window last computed: it only moves at the
#: boundary, so most requests compute nothing.
_windows: dict[tuple[str, Any], tuple[int, int]] = {}


def window_end(unit: str, zone: tzinfo | None, now: float) -> int:
    """The epoch ms when the *unit* window that holds *now* ends in *zone* (UTC: None).

    >>> window_end("day", None, 1_765_065_599.0)  # 2025-12-06 23:59:59 UTC
    1765065600000
    """
    ms = int(now * 1000)
    cached = _windows.get((unit, zone))
    if cached is not None and cached[0] <= ms < cached[1]:
        return cached[1]
    local = datetime.fromtimestamp(now, zone or _UTC)
    if unit == "second":
        start = local.replace(microsecond=0)
        end = start + timedelta(seconds=1)
    elif unit == "minute":
        start = local.replace(second=0, microsecond=0)
        end = start + timedelta(minutes=1)
    elif unit == "hour":
        # In absolute time: an hour after the local hour began, whatever DST does.
        start = local.replace(minute=0, second=0, microsecond=0)
        end = start.astimezone(_UTC) + timedelta(hours=1)
    else:
        day = local.date()
        if unit == "day":
            first, following = day, day + timedelta(days=1)
        elif unit == "month":
            first = day.replace(day=1)
            following = (first + timedelta(days=32)).replace(day=1)
        else:
            first = day.replace(month=1, day=1)
            following = first.replace(year=first.year + 1)
        start = datetime.combine(first, time(0), local.tzinfo)
        end = datetime.combine(following, time(0), local.tzinfo)
    window = (math.floor(start.timestamp() * 1000), math.floor(end.timestamp() * 1000))
    with _lock:
        if len(_windows) > 1024:  # units x zones from configuration; bound it anyway
            _windows.clear()
        _windows[(unit, zone)] = window
    return window[1]


def _argument(item: PlanItem, now: float) -> int:
    return window_end(item.limit.GRANULARITY.name, item.option or None, now)


_LUA = f"""
local function read(k, amount, expiry, cost, extra)
  local count = 0
  local stored = redis.call('GET', KEYS[k])
  if stored then
    local value, ends = string.match(stored, '^(%d+)@(%d+)$')
    if ends and tonumber(ends) == extra then count = tonumber(value) end
  end
  return count, count + cost <= amount
end
local function write(k, count, fits, admit, amount, expiry, cost, extra)
  if admit then
    count = count + cost
    redis.call('SET', KEYS[k], string.format('%d@%d', count, extra), 'PX',
               math.max(0, extra - now_ms) + {GRACE_MS})
  end
  return {{fits and 1 or 0, count, extra - now_ms}}
end
"""

# The reservation's window ended at at + mark (`write` answers the end less the time).
_SETTLE = f"""
local function settle(k, amount, expiry, delta, at, mark, extra)
  local count, ends = 0, extra
  local stored = redis.call('GET', KEYS[k])
  if stored then
    local value, stored_end = string.match(stored, '^(%d+)@(%d+)$')
    if stored_end then count, ends = tonumber(value), tonumber(stored_end) end
  end
  if delta > 0 then
    if ends ~= extra then count = 0 end
    redis.call('SET', KEYS[k], string.format('%d@%d', count + delta, extra), 'PX',
               math.max(0, extra - now_ms) + {GRACE_MS})
  elseif stored and ends == at + mark then
    redis.call('SET', KEYS[k], string.format('%d@%d', math.max(0, count + delta), ends),
               'KEEPTTL')
  end
end
"""


class _Memory(MemoryBase):
    """Entries ``[count, end_ms]``."""

    def read(self, table: MemoryTable, key: str, item: PlanItem, now: int,
             consume: bool) -> tuple[Any, bool]:
        end = _argument(item, now / 1000)
        entry = table.data.get(key)
        count = entry[0] if entry is not None and entry[1] == end else 0
        return (entry, count, end), count + item.cost <= item.limit.amount

    def write(self, table: MemoryTable, key: str, item: PlanItem, state: Any, fits: bool,
              admit: bool, now: int) -> list[int]:
        entry, count, end = state
        if admit:
            count += item.cost
            if entry is None:
                entry = table.data[key] = [count, end]
            else:
                entry[:] = [count, end]
            table.file(key, end)
        return [int(fits), count, end - now]

    def expires(self, entry: Any) -> int:
        return int(entry[1])

    def settle(self, table: MemoryTable, key: str, item: PlanItem, delta: int, at: int,
               mark: int, now: int) -> None:
        end = _argument(item, now / 1000)
        entry = table.data.get(key)
        if delta > 0:
            if entry is None:
                entry = table.data[key] = [0, end]
            elif entry[1] != end:
                entry[:] = [0, end]
            entry[0] += delta
            table.file(key, end)
        elif entry is not None and entry[1] == at + mark:
            entry[0] = max(0, entry[0] + delta)


CALENDAR = StrategySpec("calendar", _LUA, decode, _Memory(), single_key, None, _SETTLE,
                        width=3, mark=2, argument=_argument, timed=True)
