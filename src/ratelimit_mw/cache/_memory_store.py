"""The in-process JSON caches, `MemoryCache` and `AsyncMemoryCache` (one process)."""

from __future__ import annotations

import heapq
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from ..errors import ConfigurationError
from ._store import dumps, loads

__all__ = ["AsyncMemoryCache", "MemoryCache"]

#: Seconds a value stored without a ttl lives: longer than any process.
_FOREVER = 10**9


class MemoryCache:
    """The same interface in process memory, for one process and the demo.

    Bounded twice: by *max_entries* values, and by *max_bytes* of stored JSON text
    (64 MiB by default). A value that does not fit makes room: expired values go first,
    then the oldest; a value larger than *max_bytes* is not stored. Tags list stored
    names only, and a name leaves its tags when its value goes (evicted, expired,
    deleted), so they stay as bounded as the values. For the ASGI middleware wrap it:
    ``AsyncMemoryCache(MemoryCache())`` (the default).

    Example::

        cache = MemoryCache(max_entries=10_000, max_bytes=64 << 20)
        cache.set("k", [1, 2], ttl=5)
    """

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 << 20) -> None:
        for option, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{option}={value!r}: a whole number >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        #: name -> (expires at, JSON text), oldest first: room is made from the front.
        self._data: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._bytes = 0  # the length of the JSON text in _data (ASCII: one byte a char)
        #: (expires at, name) of the values stored, soonest first (a heap). A pair whose
        #: value was replaced or removed since stays until it comes up, and is skipped.
        self._expiry: list[tuple[float, str]] = []
        self._tags: dict[str, set[str]] = {}     # tag -> the stored names it lists
        self._tags_of: dict[str, set[str]] = {}  # name -> the tags listing it
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        with self._lock:
            self._expire()
            found = self._data.get(name)
            return loads(None if found is None else found[1])

    def set(self, name: str, value: Any, ttl: int | None = None) -> bool:
        data = dumps(value)
        if ttl is not None and ttl <= 0:  # already expired: as the Redis caches do
            self.delete(name)
            return False
        with self._lock:
            now = self._expire()
            return self._put(name, data, now + (ttl if ttl is not None else _FOREVER))

    def delete(self, *names: str) -> int:
        with self._lock:
            return sum(self._remove(n) for n in names)

    def lock(self, name: str, ttl: float) -> str | None:
        with self._lock:
            now = self._expire()
            if name in self._data:
                return None
            token = uuid.uuid4().hex
            # A store too small for the token holds no entry either: its caller fetches
            # as if it held the lock, and nobody waits for a fetch no lock records.
            self._put(name, dumps(token), now + ttl)
            return token

    def unlock(self, name: str, token: str) -> None:
        with self._lock:
            self._expire()
            found = self._data.get(name)
            if found is not None and loads(found[1]) == token:
                self._remove(name)

    def tag(self, tag: str, name: str, ttl: int) -> None:
        """List the stored *name* under *tag* (for `invalidate_tag`), for as long as it
        stays stored; the Redis stores need *ttl*, here the value's own life is the
        member's. A name not stored is not listed: there is nothing to invalidate."""
        with self._lock:
            self._expire()
            if name in self._data:
                self._tags.setdefault(tag, set()).add(name)
                self._tags_of.setdefault(name, set()).add(tag)

    def invalidate_tag(self, tag: str) -> int:
        with self._lock:
            return sum(self._remove(n) for n in self._tags.pop(tag, set()))

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for key in doomed:
                self._remove(key)
            return len(doomed)

    def ping(self) -> bool:
        return True

    @property
    def connected(self) -> bool:
        return True

    def _expire(self) -> float:
        """Remove every value expired by now, soonest first; now.

        Each stored value's pair is popped once, so this costs O(log n) per value stored,
        however many calls it spreads over: no call scans all the values.
        """
        now = time.monotonic()
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            expires, name = heapq.heappop(expiry)
            found = self._data.get(name)
            if found is not None and found[0] == expires:
                self._remove(name)
        return now

    def _put(self, name: str, text: str, expires: float) -> bool:
        """Store *text*, making room from the oldest value on; ``False`` if it cannot fit."""
        old = self._data.pop(name, None)
        if old is not None:  # replaced, not gone: it keeps its tags
            self._bytes -= len(old[1])
        if len(text) > self.max_bytes:
            self._untag(name)
            return False
        while self._data and (len(self._data) >= self.max_entries
                              or self._bytes + len(text) > self.max_bytes):
            self._remove(next(iter(self._data)))
        self._data[name] = (expires, text)
        self._bytes += len(text)
        heapq.heappush(self._expiry, (expires, name))
        if len(self._expiry) > 2 * len(self._data) + 64:
            # Mostly pairs of replaced or removed values: rebuilt from the values, once
            # per as many pushes as there are values, so each push pays O(1) for it.
            self._expiry = [(until, key) for key, (until, _) in self._data.items()]
            heapq.heapify(self._expiry)
        return True

    def _remove(self, name: str) -> bool:
        """Remove the value of *name* and its place in every tag; was there one?"""
        found = self._data.pop(name, None)
        if found is None:
            return False
        self._bytes -= len(found[1])
        self._untag(name)
        return True

    def _untag(self, name: str) -> None:
        for tag in self._tags_of.pop(name, ()):
            members = self._tags.get(tag)
            if members is not None:  # None: the tag is being invalidated
                members.discard(name)
                if not members:
                    del self._tags[tag]


class AsyncMemoryCache:
    """A `MemoryCache` behind the async interface (no I/O: nothing really waits).

    Example::

        cache = AsyncMemoryCache()                         # a MemoryCache() inside
        cache = AsyncMemoryCache(MemoryCache(max_bytes=16 << 20))
        await cache.set("k", [1, 2], ttl=5)
    """

    def __init__(self, cache: MemoryCache | None = None) -> None:
        self.sync = cache or MemoryCache()

    async def get(self, name: str) -> Any:
        return self.sync.get(name)

    async def set(self, name: str, value: Any, ttl: int | None = None) -> bool:
        return self.sync.set(name, value, ttl)

    async def delete(self, *names: str) -> int:
        return self.sync.delete(*names)

    async def lock(self, name: str, ttl: float) -> str | None:
        return self.sync.lock(name, ttl)

    async def unlock(self, name: str, token: str) -> None:
        self.sync.unlock(name, token)

    async def tag(self, tag: str, name: str, ttl: int) -> None:
        self.sync.tag(tag, name, ttl)

    async def invalidate_tag(self, tag: str) -> int:
        return self.sync.invalidate_tag(tag)

    async def delete_prefix(self, prefix: str) -> int:
        return self.sync.delete_prefix(prefix)

    async def ping(self) -> bool:
        return True

    @property
    def connected(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None
