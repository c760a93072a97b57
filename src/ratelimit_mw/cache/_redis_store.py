"""The Redis JSON caches, `RedisCache` and `AsyncRedisCache`, and their Lua scripts.

A cache never fails a request: every storage error is caught and reported as a miss or a
no-op, and a circuit breaker (the limiter's) stops paying timeouts while Redis is down,
logging once per outage.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

from .._breaker import CircuitBreaker
from .._storage.limiter import RedisOptions, _client_url, _redis_module, mask_url
from ..errors import ConfigurationError
from ._store import dumps, loads

__all__ = ["AsyncRedisCache", "RedisCache"]

#: The cache's logger name, kept stable for logging configs; an outage is logged once, by
#: the circuit breaker on ``ratelimit_mw.breaker``.
logger = logging.getLogger("ratelimit_mw.cache")

# Release a lock only if it is still ours (it may have expired and been taken since).
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# A tag is a sorted set of keys scored by when they expire (server time); it lives as long as
# its longest-lived member. Expired members are dropped on every tag: a plain set whose TTL
# every store pushed back grew for ever under a stream of distinct queries of one path.
_TAG = """
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""
# Members may live in other slots on a cluster: delete them one call each.
_INVALIDATE = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local removed = 0
for _, key in ipairs(members) do removed = removed + redis.call('DEL', key) end
redis.call('DEL', KEYS[1])
return removed
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class _RedisBase:
    """Construction shared by the sync and async Redis caches."""

    def __init__(self, url: str | None = None, *, client: Any = None,
                 connection_pool: Any = None, prefix: str = "rlmw:cache",
                 redis_options: RedisOptions | None = None) -> None:
        given = sum(x is not None for x in (url, client, connection_pool))
        if given != 1:
            raise ConfigurationError(f"{type(self).__name__}: give exactly one of url, "
                                     "client or connection_pool")
        if url is not None and not url.startswith(("redis://", "rediss://", "redis+unix://",
                                                   "unix://")):
            raise ConfigurationError(f"{type(self).__name__}({mask_url(url)!r}): use a "
                                     "redis://, rediss:// or redis+unix:// URL")
        self.prefix = prefix
        self.options = redis_options or RedisOptions()
        self.url = mask_url(url) if url else repr(client or connection_pool)
        self.breaker = CircuitBreaker(name=f"response cache {self.url}")
        self._errors = _redis_errors()
        self.client = self._make_client(url, client, connection_pool)
        self._unlock = self.client.register_script(_UNLOCK)
        self._tag_script = self.client.register_script(_TAG)
        self._invalidate_script = self.client.register_script(_INVALIDATE)

    def _make_client(self, url: str | None, client: Any, pool: Any) -> Any:
        raise NotImplementedError

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}" if self.prefix else name

    def _failed(self, error: BaseException) -> None:
        self.breaker.failure(error)


def _redis_errors() -> tuple[type[BaseException], ...]:
    redis = _redis_module()
    return (redis.RedisError, OSError, TimeoutError)


class RedisCache(_RedisBase):
    """A JSON cache in Redis with a blocking pool and short timeouts; never raises.

    Build it from a URL, an existing client, or the pool your limiter uses (one
    ``REDIS_URL``, one pool)::

        cache = RedisCache("redis://localhost:6379/0")
        cache.set("greeting", {"text": "hello"}, ttl=60)
        cache.get("greeting")               # {'text': 'hello'}, or None on a miss/outage
        cache.ping()                        # True when Redis answers
        cache = RedisCache(connection_pool=limiter.storage.get_connection().connection_pool)
    """

    def _make_client(self, url: str | None, client: Any, pool: Any) -> Any:
        redis = _redis_module()
        if client is not None:
            return client
        if pool is None:
            pool = redis.BlockingConnectionPool.from_url(_client_url(url or ""),
                                                         **self.options.pool_kwargs())
            # from_pool: the client owns the pool we built, so close() disconnects it.
            # (Redis(connection_pool=pool) never closes it: close() leaked its sockets.)
            return redis.Redis.from_pool(pool)
        return redis.Redis(connection_pool=pool)  # the caller's pool: theirs to close

    def _call(self, default: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.breaker.allow():
            return default
        try:
            result = method(*args, **kwargs)
        except self._errors as error:
            self._failed(error)
            return default
        self.breaker.success()
        return result

    def get(self, name: str) -> Any:
        """The JSON value stored under *name*, or ``None``."""
        return loads(self._call(None, self.client.get, self.key(name)))

    def set(self, name: str, value: Any, ttl: int | None = None) -> bool:
        """Store *value* as JSON, expiring after *ttl* seconds; ``False`` if not stored."""
        data = dumps(value)
        if ttl is not None and ttl <= 0:
            # Already expired. Redis refuses EX 0 with an error, which the breaker took
            # for an outage (a WARNING, and no caching for the back-off).
            self.delete(name)
            return False
        return bool(self._call(False, self.client.set, self.key(name), data, ex=ttl))

    def delete(self, *names: str) -> int:
        """Remove keys; the number removed (0 on an outage)."""
        if not names:
            return 0
        return int(self._call(0, self.client.delete, *(self.key(n) for n in names)) or 0)

    def lock(self, name: str, ttl: float) -> str | None:
        """A token if the lock *name* was free (and is now ours for *ttl* s), else ``None``."""
        token = uuid.uuid4().hex
        ok = self._call(None, self.client.set, self.key(name), token, nx=True,
                        px=_millis(ttl))
        return token if ok else None

    def unlock(self, name: str, token: str) -> None:
        self._call(None, self._unlock, keys=[self.key(name)], args=[token])

    def tag(self, tag: str, name: str, ttl: int) -> None:
        """Remember that *name* belongs to *tag* (for `invalidate_tag`)."""
        self._call(None, self._tag_script, keys=[self.key(tag)], args=[self.key(name), ttl])

    def invalidate_tag(self, tag: str) -> int:
        """Delete every key tagged *tag*, and the tag."""
        return int(self._call(0, self._invalidate_script, keys=[self.key(tag)]) or 0)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key that starts with *prefix*, with ``SCAN`` (never ``KEYS``)."""
        pattern = _glob_escape(self.key(prefix)) + "*"
        removed = 0
        if not self.breaker.allow():
            return 0
        try:
            for batch in _batches(self.client.scan_iter(match=pattern, count=500)):
                removed += int(self.client.delete(*batch))
        except self._errors as error:
            self._failed(error)
        return removed

    def ping(self) -> bool:
        """``True`` when Redis answers."""
        return bool(self._call(False, self.client.ping))

    @property
    def connected(self) -> bool:
        """``False`` while the circuit breaker considers Redis down."""
        return not self.breaker.is_open

    def close(self) -> None:
        self.client.close()


class AsyncRedisCache(_RedisBase):
    """`RedisCache` for asyncio: the same methods as coroutines (``aclose``).

    Example::

        cache = AsyncRedisCache("redis://localhost:6379/0")
        await cache.set("greeting", {"text": "hello"}, ttl=60)
        await cache.get("greeting")
    """

    def _make_client(self, url: str | None, client: Any, pool: Any) -> Any:
        redis = _redis_module()
        if client is not None:
            return client
        if pool is None:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                _client_url(url or ""), **self.options.pool_kwargs())
            # from_pool: aclose() disconnects the pool we built (it used to leak it, and
            # redis-py warned "unclosed Connection" when it was collected).
            return redis.asyncio.Redis.from_pool(pool)
        return redis.asyncio.Redis(connection_pool=pool)  # the caller's pool: theirs

    async def _call(self, default: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.breaker.allow():
            return default
        try:
            result = await method(*args, **kwargs)
        except self._errors as error:
            self._failed(error)
            return default
        self.breaker.success()
        return result

    async def get(self, name: str) -> Any:
        return loads(await self._call(None, self.client.get, self.key(name)))

    async def set(self, name: str, value: Any, ttl: int | None = None) -> bool:
        data = dumps(value)
        if ttl is not None and ttl <= 0:  # already expired (see RedisCache.set)
            await self.delete(name)
            return False
        return bool(await self._call(False, self.client.set, self.key(name), data, ex=ttl))

    async def delete(self, *names: str) -> int:
        if not names:
            return 0
        return int(await self._call(0, self.client.delete, *(self.key(n) for n in names)) or 0)

    async def lock(self, name: str, ttl: float) -> str | None:
        token = uuid.uuid4().hex
        ok = await self._call(None, self.client.set, self.key(name), token, nx=True,
                              px=_millis(ttl))
        return token if ok else None

    async def unlock(self, name: str, token: str) -> None:
        await self._call(None, self._unlock, keys=[self.key(name)], args=[token])

    async def tag(self, tag: str, name: str, ttl: int) -> None:
        await self._call(None, self._tag_script, keys=[self.key(tag)],
                         args=[self.key(name), ttl])

    async def invalidate_tag(self, tag: str) -> int:
        return int(await self._call(0, self._invalidate_script, keys=[self.key(tag)]) or 0)

    async def delete_prefix(self, prefix: str) -> int:
        pattern = _glob_escape(self.key(prefix)) + "*"
        removed = 0
        if not self.breaker.allow():
            return 0
        try:
            batch: list[Any] = []
            async for key in self.client.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    removed += int(await self.client.delete(*batch))
                    batch = []
            if batch:
                removed += int(await self.client.delete(*batch))
        except self._errors as error:
            self._failed(error)
        return removed

    async def ping(self) -> bool:
        return bool(await self._call(False, self.client.ping))

    @property
    def connected(self) -> bool:
        return not self.breaker.is_open

    async def aclose(self) -> None:
        await self.client.aclose()


def _millis(ttl: float) -> int:
    # PX 0 is an error to Redis (counted as an outage): a lock lives at least 1 ms.
    return max(1, int(ttl * 1000))


def _batches(keys: Iterator[Any], size: int = 500) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

