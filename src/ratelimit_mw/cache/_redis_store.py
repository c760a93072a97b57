"""The Redis JSON caches, `RedisCache` and `AsyncRedisCache`, and their Lua scripts.

A cache never fails a request: every storage error is caught and reported as a miss or a
no-op, and a circuit breaker (the limiter's) stops paying timeouts while Redis is down,
logging once per outage.

The logic of each method is written once, as a flow (`ratelimit_mw._flow`) on the cache
itself: it builds the command, and decodes the reply it is sent back. Its one operation
is ``cache._call(default, command, *args)``, the guarded I/O call, which is all the sync
and async classes write twice (the second ``await``s).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from .._breaker import CircuitBreaker
from .._flow import Flow, Op, arun, run
from .._storage.redis import RedisOptions, client_url, mask_url, redis_module
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
# its longest-lived member. Expired members are dropped on every tag, so the tag of a path
# stays as small as its live entries under a stream of distinct queries.
_TAG = """
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""
# The members share the tag's hash tag (`key`), so on a cluster they are in its slot.
_INVALIDATE = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local removed = 0
for _, key in ipairs(members) do removed = removed + redis.call('DEL', key) end
redis.call('DEL', KEYS[1])
return removed
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _millis(ttl: float) -> int:
    # PX 0 is an error to Redis (counted as an outage): a lock lives at least 1 ms.
    return max(1, int(ttl * 1000))


def _redis_errors() -> tuple[type[BaseException], ...]:
    redis = redis_module()
    return (redis.RedisError, OSError, TimeoutError)


def _io(default: Any, command: Any, *args: Any, **kwargs: Any) -> Op:
    """The operation ``cache._call(default, command, *args, **kwargs)``."""
    return lambda cache: cache._call(default, command, *args, **kwargs)


class _RedisCache:
    """Construction, and every method as a flow; the subclasses run the flows."""

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
        self._unlock_script = self.client.register_script(_UNLOCK)
        self._tag_script = self.client.register_script(_TAG)
        self._invalidate_script = self.client.register_script(_INVALIDATE)

    def _redis_api(self) -> Any:
        """``redis`` or ``redis.asyncio``: where the client and pool classes come from."""
        raise NotImplementedError

    def _make_client(self, url: str | None, client: Any, pool: Any) -> Any:
        if client is not None:
            return client
        api = self._redis_api()
        if pool is None:
            pool = api.BlockingConnectionPool.from_url(client_url(url or ""),
                                                       **self.options.pool_kwargs())
            # from_pool: the client owns the pool we built, so closing the cache
            # disconnects it.
            return api.Redis.from_pool(pool)
        return api.Redis(connection_pool=pool)  # the caller's pool: theirs to close

    def key(self, name: str) -> str:
        # Every key of one URI (``<uri>#...``: its entries, records, locks and tag) shares
        # a hash tag, the URI: on Redis Cluster they live in one slot, so the tag script
        # may delete them in one call.
        uri, sep, rest = name.partition("#")
        if sep:
            name = f"{{{uri}}}#{rest}"
        return f"{self.prefix}:{name}" if self.prefix else name

    @property
    def connected(self) -> bool:
        """``False`` while the circuit breaker considers Redis down."""
        return not self.breaker.is_open

    def _get(self, name: str) -> Flow[Any]:
        return loads((yield _io(None, self.client.get, self.key(name))))

    def _set(self, name: str, value: Any, ttl: int | None) -> Flow[bool]:
        data = dumps(value)
        if ttl is not None and ttl <= 0:
            # Already expired. Redis refuses EX 0 with an error, which the breaker would
            # take for an outage (a WARNING, and no caching for the back-off).
            yield from self._delete((name,))
            return False
        return bool((yield _io(False, self.client.set, self.key(name), data, ex=ttl)))

    def _delete(self, names: tuple[str, ...]) -> Flow[int]:
        if not names:
            return 0
        keys = [self.key(n) for n in names]
        return int((yield _io(0, self.client.delete, *keys)) or 0)

    def _lock(self, name: str, ttl: float) -> Flow[str | None]:
        token = uuid.uuid4().hex
        ok = yield _io(None, self.client.set, self.key(name), token, nx=True, px=_millis(ttl))
        return token if ok else None

    def _unlock(self, name: str, token: str) -> Flow[None]:
        yield _io(None, self._unlock_script, keys=[self.key(name)], args=[token])

    def _tag(self, tag: str, name: str, ttl: int) -> Flow[None]:
        yield _io(None, self._tag_script, keys=[self.key(tag)], args=[self.key(name), ttl])

    def _invalidate_tag(self, tag: str) -> Flow[int]:
        return int((yield _io(0, self._invalidate_script, keys=[self.key(tag)])) or 0)

    def _delete_prefix(self, prefix: str) -> Flow[int]:
        # A name with "#" is keyed "{uri}#...": a prefix without "#" may begin either form.
        heads = [self.key(prefix)] if "#" in prefix else [self.key(prefix),
                                                          self.key("{" + prefix)]
        removed = 0
        for head in heads:
            pattern = _glob_escape(head) + "*"
            cursor = 0
            while True:
                page = yield _io(None, self.client.scan, cursor, match=pattern, count=500)
                if page is None:  # Redis failed: what is deleted stays deleted
                    return removed
                cursor, keys = page
                if keys:
                    removed += int((yield _io(0, self.client.delete, *keys)) or 0)
                if not cursor:  # SCAN is complete when it hands back cursor 0
                    break
        return removed

    def _ping(self) -> Flow[bool]:
        return bool((yield _io(False, self.client.ping)))


class RedisCache(_RedisCache):
    """A JSON cache in Redis with a blocking pool and short timeouts; never raises.

    Build it from a URL, an existing client, or the pool your limiter uses (one
    ``REDIS_URL``, one pool)::

        cache = RedisCache("redis://localhost:6379/0")
        cache.set("greeting", {"text": "hello"}, ttl=60)
        cache.get("greeting")               # {'text': 'hello'}, or None on a miss/outage
        cache.ping()                        # True when Redis answers
        cache = RedisCache(connection_pool=limiter.storage.get_connection().connection_pool)
    """

    def _redis_api(self) -> Any:
        return redis_module()

    def _call(self, default: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.breaker.allow():
            return default
        try:
            result = command(*args, **kwargs)
        except self._errors as error:
            self.breaker.failure(error)
            return default
        self.breaker.success()
        return result

    def get(self, name: str) -> Any:
        """The JSON value stored under *name*, or ``None``."""
        return run(self._get(name), self)

    def set(self, name: str, value: Any, ttl: int | None = None) -> bool:
        """Store *value* as JSON, expiring after *ttl* seconds; ``False`` if not stored."""
        return run(self._set(name, value, ttl), self)

    def delete(self, *names: str) -> int:
        """Remove keys; the number removed (0 on an outage)."""
        return run(self._delete(names), self)

    def lock(self, name: str, ttl: float) -> str | None:
        """A token if the lock *name* was free (and is now ours for *ttl* s), else ``None``."""
        return run(self._lock(name, ttl), self)

    def unlock(self, name: str, token: str) -> None:
        """Release the lock *name* if *token* still holds it."""
        run(self._unlock(name, token), self)

    def tag(self, tag: str, name: str, ttl: int) -> None:
        """Remember that *name* belongs to *tag* (for `invalidate_tag`)."""
        run(self._tag(tag, name, ttl), self)

    def invalidate_tag(self, tag: str) -> int:
        """Delete every key tagged *tag*, and the tag."""
        return run(self._invalidate_tag(tag), self)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key that starts with *prefix*, with ``SCAN`` (never ``KEYS``)."""
        return run(self._delete_prefix(prefix), self)

    def ping(self) -> bool:
        """``True`` when Redis answers."""
        return run(self._ping(), self)

    def close(self) -> None:
        self.client.close()


class AsyncRedisCache(_RedisCache):
    """`RedisCache` for asyncio: the same methods as coroutines (``aclose``).

    Example::

        cache = AsyncRedisCache("redis://localhost:6379/0")
        await cache.set("greeting", {"text": "hello"}, ttl=60)
        await cache.get("greeting")
    """

    def _redis_api(self) -> Any:
        return redis_module().asyncio

    async def _call(self, default: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.breaker.allow():
            return default
        try:
            result = await command(*args, **kwargs)
        except self._errors as error:
            self.breaker.failure(error)
            return default
        self.breaker.success()
        return result

    async def get(self, name: str) -> Any:
        return await arun(self._get(name), self)

    async def set(self, name: str, value: Any, ttl: int | None = None) -> bool:
        return await arun(self._set(name, value, ttl), self)

    async def delete(self, *names: str) -> int:
        return await arun(self._delete(names), self)

    async def lock(self, name: str, ttl: float) -> str | None:
        return await arun(self._lock(name, ttl), self)

    async def unlock(self, name: str, token: str) -> None:
        await arun(self._unlock(name, token), self)

    async def tag(self, tag: str, name: str, ttl: int) -> None:
        await arun(self._tag(tag, name, ttl), self)

    async def invalidate_tag(self, tag: str) -> int:
        return await arun(self._invalidate_tag(tag), self)

    async def delete_prefix(self, prefix: str) -> int:
        return await arun(self._delete_prefix(prefix), self)

    async def ping(self) -> bool:
        return await arun(self._ping(), self)

    async def aclose(self) -> None:
        await self.client.aclose()
