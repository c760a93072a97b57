"""In-process counters with the semantics of the Redis scripts. No I/O.

Why not ``limits``' own memory storages: their async one walks every key on every
expiry tick, their sync moving window keeps expired entries, and a check there takes two
operations per limit. This store answers a whole plan in one call, in the same numbers the
Lua scripts return (``windows.py`` decodes both), so memory and Redis decide alike:
all-or-nothing over the limits of a request, refused requests never consume.

Memory is per process: with several workers each keeps its own counters, so a limit of
100/minute lets up to ``100 * workers`` through. Use Redis when that matters.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .._core import Plan, Quota, item_key
from .windows import DECODERS

__all__ = ["MemoryStore"]

_STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")


class MemoryStore:
    """Counters for one strategy, keyed like the Redis keys, expired in O(1) amortised.

    Example::

        store = MemoryStore("fixed-window")
        values = store.check(plan)          # the integers the Lua script would return

    Expired keys are released: every key is filed under the second it expires in, and
    each check first drops the keys of the seconds that have passed, re-filing those whose
    expiry moved. The cost of a check does not grow with the number of live keys.
    """

    def __init__(self, strategy: str, clock: Callable[[], float] = time.time) -> None:
        if strategy not in _STRATEGIES:  # pragma: no cover - the limiter checks first
            raise ValueError(strategy)
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {}
        self._due: dict[int, list[str]] = {}  # expiry second -> keys filed under it
        self._seconds: list[int] = []  # heap of the seconds in _due
        self._check: Callable[[Plan, int, bool], list[int]] = {
            "fixed-window": self._fixed,
            "moving-window": self._moving,
            "sliding-window-counter": self._sliding,
        }[strategy]
        self._decode = DECODERS[strategy]

    def __len__(self) -> int:
        return len(self._data)

    def check(self, plan: Plan, *, consume: bool = True) -> list[int]:
        """Decide *plan* (consuming if allowed and *consume*); the script's integers."""
        return self._decide(plan, int(self._clock() * 1000), consume)

    def quotas(self, plan: Plan, *, consume: bool = True) -> tuple[Quota, ...]:
        """Decide *plan* and decode the result: one `Quota` per plan item.

        One clock reading serves the check and the quotas' reset times.
        """
        clock = self._clock()
        return self._decode(plan, self._decide(plan, int(clock * 1000), consume), clock)

    def _decide(self, plan: Plan, now: int, consume: bool) -> list[int]:
        with self._lock:
            seconds = self._seconds
            if seconds and seconds[0] * 1000 <= now:  # a second has passed: expire
                self._expire(now)
            return self._check(plan, now, consume)

    def clear(self, key: str) -> None:
        """Forget every counter stored under *key*."""
        with self._lock:
            self._data.pop(key, None)

    # -- expiry ------------------------------------------------------------------------

    def _file(self, key: str, expires_ms: int) -> None:
        second = expires_ms // 1000 + 1
        keys = self._due.get(second)
        if keys is None:
            self._due[second] = [key]
            heapq.heappush(self._seconds, second)
        else:
            keys.append(key)

    def _expire(self, now: int) -> None:
        seconds = self._seconds
        while seconds and seconds[0] * 1000 <= now:
            for key in self._due.pop(heapq.heappop(seconds), ()):
                entry = self._data.get(key)
                if entry is None:
                    continue
                expires = self._expires(entry)
                if expires <= now:
                    del self._data[key]
                else:
                    self._file(key, expires)  # its expiry moved on since it was filed

    @staticmethod
    def _expires(entry: Any) -> int:
        if isinstance(entry, _Moving):
            return entry.stamps[-1] + entry.window if entry.stamps else 0
        return int(entry[1])

    # -- strategies: each returns the integers of its Lua script ---------------------

    def _fixed(self, plan: Plan, now: int, consume: bool) -> list[int]:
        data = self._data
        if len(plan.items) == 1:  # the common case, without the all-or-nothing pass
            item = plan.items[0]
            key = item_key(item)
            entry = data.get(key)
            if entry is not None and entry[1] <= now:
                entry = None
            count = entry[0] if entry else 0
            allowed = count + item.cost <= item.limit.amount
            if allowed and consume:
                if entry is None:
                    window = item.limit.get_expiry() * 1000
                    entry = data[key] = [0, now + window]
                    self._file(key, now + window)
                entry[0] += item.cost
                count = entry[0]
            ttl = entry[1] - now if entry else item.limit.get_expiry() * 1000
            return [int(allowed), count, ttl]
        entries = []
        ok = True
        for item in plan.items:
            key = item_key(item)
            entry = data.get(key)
            if entry is not None and entry[1] <= now:
                entry = None
            entries.append((key, entry))
            if (entry[0] if entry else 0) + item.cost > item.limit.amount:
                ok = False
        out: list[int] = []
        for item, (key, entry) in zip(plan.items, entries, strict=True):
            window = item.limit.get_expiry() * 1000
            before = entry[0] if entry else 0
            if ok and consume:
                if entry is None:
                    entry = data[key] = [0, now + window]
                    self._file(key, now + window)
                entry[0] += item.cost
            out += (int(before + item.cost <= item.limit.amount),
                    entry[0] if entry else 0, entry[1] - now if entry else window)
        return out

    def _moving(self, plan: Plan, now: int, consume: bool) -> list[int]:
        data = self._data
        entries = []
        ok = True
        for item in plan.items:
            key = item_key(item)
            window = item.limit.get_expiry() * 1000
            entry = data.get(key)
            if entry is not None:
                stamps = entry.stamps
                while stamps and stamps[0] < now - window:
                    stamps.popleft()
            entries.append((key, entry))
            if (len(entry.stamps) if entry else 0) + item.cost > item.limit.amount:
                ok = False
        out: list[int] = []
        for item, (key, entry) in zip(plan.items, entries, strict=True):
            amount, cost = item.limit.amount, item.cost
            window = item.limit.get_expiry() * 1000
            count = len(entry.stamps) if entry else 0
            allowed = count + cost <= amount
            retry = 0
            if not allowed:
                # the (count + cost - amount)-th oldest entry must leave the window first
                retry = window if cost > amount or entry is None else max(
                    0, entry.stamps[count + cost - amount - 1] + window - now)
            if ok and consume:
                if entry is None:
                    entry = data[key] = _Moving(amount, window)
                    self._file(key, now + window)
                entry.stamps.extend([now] * cost)
                count = len(entry.stamps)
            reset = entry.stamps[0] + window - now if entry and entry.stamps else window
            out += (int(allowed), count, max(0, reset), retry)
        return out

    def _sliding(self, plan: Plan, now: int, consume: bool) -> list[int]:
        # Two counters per key, as limits keeps them in Redis: the current one lives two
        # windows; once less than one window is left it becomes the previous one.
        data = self._data
        states = []
        ok = True
        for item in plan.items:
            key = item_key(item)
            window = item.limit.get_expiry() * 1000
            entry = data.get(key)
            if entry is not None and entry[1] <= now:
                entry = None
            if entry is None:
                state = (0, 0, 0, 0)
            else:
                current, current_end, previous, previous_end = entry
                if current_end - now < window:
                    previous, previous_end = current, current_end
                    current, current_end = 0, current_end + window
                    if consume:  # the rollover is a write, as in Redis
                        entry[:] = [current, current_end, previous, previous_end]
                previous_ttl = max(0, previous_end - now)
                state = (previous if previous_ttl else 0, previous_ttl, current,
                         current_end - now)
            weighted = state[0] * state[1] // window + state[2]
            states.append((key, entry, state, weighted + item.cost <= item.limit.amount))
            if weighted + item.cost > item.limit.amount:
                ok = False
        out: list[int] = []
        for item, (key, entry, state, allowed) in zip(plan.items, states, strict=True):
            prev, prev_ttl, current, current_ttl = state
            if ok and consume:
                window = item.limit.get_expiry() * 1000
                if entry is None:
                    entry = data[key] = [0, now + 2 * window, 0, 0]
                    self._file(key, now + 2 * window)
                    current_ttl = 2 * window
                entry[0] += item.cost
                current = entry[0]
            out += (int(allowed), prev, prev_ttl, current, current_ttl)
        return out


class _Moving:
    """A moving window's timestamps (ms, oldest first), at most *amount* of them."""

    __slots__ = ("stamps", "window")

    def __init__(self, amount: int, window: int) -> None:
        self.stamps: deque[int] = deque(maxlen=amount)
        self.window = window
