"""In-process counters with the semantics of the Redis scripts. No I/O.

Why not ``limits``' own memory storages: their async one walks every key on every
expiry tick, their sync moving window keeps expired entries, and a check there takes two
operations per limit. This store answers a whole plan in one call, in the same integers the
strategy's Lua script returns (its decoder reads both), so memory and Redis decide alike:
all-or-nothing over the limits of a request, refused requests never consume.

Memory is per process: with several workers each keeps its own counters, so a limit of
100/minute lets up to ``100 * workers`` through. Use Redis when that matters.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

from .._core import Plan, Quota, item_key
from .._strategies import Strategy, strategy_named
from .._strategies.base import decide_in_memory

__all__ = ["MemoryStore"]


class MemoryStore:
    """Counters for one strategy, keyed like the Redis keys, expired in O(1) amortised.

    Example::

        store = MemoryStore("fixed-window")
        quotas = store.quotas(plan)         # one Quota per plan item, as from Redis

    Expired keys are released: every key is filed under the second it expires in, and
    each check first drops the keys of the seconds that have passed, re-filing those whose
    expiry moved. The cost of a check does not grow with the number of live keys.
    """

    def __init__(self, strategy: Strategy, clock: Callable[[], float] = time.time) -> None:
        spec = strategy_named(strategy)
        self._algorithm = spec.memory
        self._decode = spec.decode
        self._clock = clock
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {}
        self._due: dict[int, list[str]] = {}  # expiry second -> keys filed under it
        self._seconds: list[int] = []  # heap of the seconds in _due

    def __len__(self) -> int:
        return len(self.data)

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
            items = plan.items
            if len(items) == 1:  # nothing to agree with: read and write at once
                item = items[0]
                key = item.limit_key or item_key(item)
                algorithm = self._algorithm
                state, fits = algorithm.read(self, key, item, now, consume)
                return algorithm.write(self, key, item, state, fits, consume and fits, now)
            return decide_in_memory(self._algorithm, self, plan, now, consume)

    def clear(self, key: str) -> None:
        """Forget every counter stored under *key*."""
        with self._lock:
            self.data.pop(key, None)

    def file(self, key: str, expires_ms: int) -> None:
        """Release *key* once *expires_ms* (epoch ms) has passed, unless its expiry moves."""
        second = expires_ms // 1000 + 1
        keys = self._due.get(second)
        if keys is None:
            self._due[second] = [key]
            heapq.heappush(self._seconds, second)
        else:
            keys.append(key)

    def _expire(self, now: int) -> None:
        seconds = self._seconds
        expires = self._algorithm.expires
        while seconds and seconds[0] * 1000 <= now:
            for key in self._due.pop(heapq.heappop(seconds), ()):
                entry = self.data.get(key)
                if entry is None:
                    continue
                until = expires(entry)
                if until <= now:
                    del self.data[key]
                else:
                    self.file(key, until)  # its expiry moved on since it was filed
