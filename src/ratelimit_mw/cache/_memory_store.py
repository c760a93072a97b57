"""The in-process JSON caches, `MemoryCache` and `AsyncMemoryCache` (one process)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from ._store import dumps, loads

__all__ = ["AsyncMemoryCache", "MemoryCache"]


class MemoryCache:
    """The same interface in process memory, for one process and the demo.

    For the ASGI middleware wrap it: ``AsyncMemoryCache(MemoryCache())`` (the default).

    Example::

        cache = MemoryCache(max_entries=10_000)
        cache.set("k", [1, 2], ttl=5)
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._data: dict[str, tuple[float, str]] = {}
        self._tags: dict[str, dict[str, float]] = {}  # tag -> {member: expires at}
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def _live(self, name: str, now: float) -> str | None:
        found = self._data.get(name)
        if found is None:
            return None
        if found[0] <= now:
            del self._data[name]
            return None
        return found[1]

    def get(self, name: str) -> Any:
        with self._lock:
            return loads(self._live(name, time.monotonic()))

    def set(self, name: str, value: Any, ttl: int | None = None) -> bool:
        data = dumps(value)
        if ttl is not None and ttl <= 0:  # already expired: as the Redis caches do
            self.delete(name)
            return False
        with self._lock:
            now = time.monotonic()
            if len(self._data) >= self.max_entries:
                for key in [k for k, (exp, _) in self._data.items() if exp <= now]:
                    del self._data[key]
                if len(self._data) >= self.max_entries:  # still full: drop the oldest
                    self._data.pop(next(iter(self._data)))
            self._data[name] = (now + (ttl if ttl is not None else 10**9), data)
        return True

    def delete(self, *names: str) -> int:
        with self._lock:
            return sum(self._data.pop(n, None) is not None for n in names)

    def lock(self, name: str, ttl: float) -> str | None:
        with self._lock:
            if self._live(name, time.monotonic()) is not None:
                return None
            token = uuid.uuid4().hex
            self._data[name] = (time.monotonic() + ttl, dumps(token))
            return token

    def unlock(self, name: str, token: str) -> None:
        with self._lock:
            if loads(self._live(name, time.monotonic())) == token:
                del self._data[name]

    def tag(self, tag: str, name: str, ttl: int) -> None:
        # Members expire with their entries and tags with their last member, so the tags
        # stay bounded as the entries are (max_entries).
        with self._lock:
            now = time.monotonic()
            members = self._tags.setdefault(tag, {})
            for member in [m for m, until in members.items() if until <= now]:
                del members[member]
            members[name] = now + ttl
            if len(self._tags) > self.max_entries:
                for key in [k for k, m in self._tags.items()
                            if all(until <= now for until in m.values())]:
                    del self._tags[key]

    def invalidate_tag(self, tag: str) -> int:
        with self._lock:
            members = self._tags.pop(tag, {})
            return sum(self._data.pop(n, None) is not None for n in members)

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for key in doomed:
                del self._data[key]
            return len(doomed)

    def ping(self) -> bool:
        return True

    @property
    def connected(self) -> bool:
        return True


class AsyncMemoryCache:
    """A `MemoryCache` behind the async interface (no I/O: nothing really waits).

    Example::

        cache = AsyncMemoryCache()
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
