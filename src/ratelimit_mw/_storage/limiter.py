"""Limiters on ``limits`` storages: `RateLimiter` (sync) and `AsyncRateLimiter`.

The logic of a check lives once, in `_check_flow`, a generator that yields storage
operations and receives their results (the shape of httpx's auth flows). The sync and async
limiters only differ in how they run an operation: ``op(strategy)`` or
``await op(strategy)``.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Generator
from typing import Any, ClassVar, Literal, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import limits.aio.storage
import limits.aio.strategies
import limits.errors
import limits.storage
import limits.strategies
from limits import RateLimitItem, parse
from limits.util import WindowStats

from .._breaker import CircuitBreaker, EventHook
from .._core import Decision, Plan, PlanItem, Quota, item_key, limit_key, storage_key
from .._rules import NAMESPACE
from ..errors import ConfigurationError, StorageError, StorageUnavailableError
from . import lua as _lua
from .batch import ScriptBatcher
from .memory import MemoryStore
from .windows import DECODERS

__all__ = ["AsyncRateLimiter", "RateLimiter", "RedisOptions", "Strategy", "mask_url"]

Strategy = Literal["fixed-window", "moving-window", "sliding-window-counter"]

_SYNC_STRATEGIES: dict[str, Any] = {
    "fixed-window": limits.strategies.FixedWindowRateLimiter,
    "moving-window": limits.strategies.MovingWindowRateLimiter,
    "sliding-window-counter": limits.strategies.SlidingWindowCounterRateLimiter,
}
_ASYNC_STRATEGIES: dict[str, Any] = {
    "fixed-window": limits.aio.strategies.FixedWindowRateLimiter,
    "moving-window": limits.aio.strategies.MovingWindowRateLimiter,
    "sliding-window-counter": limits.aio.strategies.SlidingWindowCounterRateLimiter,
}
#: The first part of every Redis key we write: ``rlmw:<strategy>:rl/{<rule>/<identity>}/...``.
KEY_PREFIX = "rlmw"
_REDIS_SCHEMES = ("redis", "rediss", "redis+unix")
_OTHER_SCHEMES = ("redis+cluster", "redis+sentinel")
_SCHEMES = ("memory", *_REDIS_SCHEMES, *_OTHER_SCHEMES)

#: A storage operation: takes a limits strategy, returns a value (sync) or awaitable (async).
Op: TypeAlias = Callable[[Any], Any]


class RedisOptions:
    """Connection settings for Redis storages, with request-path defaults.

    redis-py waits 5 s on a dead socket and its default pool *raises* past 100
    connections; in front of an API both are wrong. We use a blocking pool (requests
    wait up to ``pool_timeout`` for a free connection) and sub-second socket timeouts.

    ``batch`` (asyncio, standalone Redis and Sentinel): checks that reach the limiter
    while others are waiting on Redis are gathered, per event-loop tick, into one
    pipeline, one write and one read for all of them; each still runs its own atomic
    script and gets its own answer. A check with nothing in flight is sent at once.

    Example::

        RateLimiter("redis://localhost:6379/0",
                    redis_options=RedisOptions(socket_timeout=0.1, max_connections=200))
    """

    __slots__ = ("batch", "max_connections", "pool_timeout", "socket_connect_timeout",
                 "socket_timeout")

    def __init__(
        self,
        *,
        socket_timeout: float = 0.25,
        socket_connect_timeout: float = 0.25,
        max_connections: int = 64,
        pool_timeout: float = 1.0,
        batch: bool = True,
    ) -> None:
        for name, value in (("socket_timeout", socket_timeout),
                            ("socket_connect_timeout", socket_connect_timeout),
                            ("pool_timeout", pool_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    0 < value < math.inf):  # nan fails both comparisons
                raise ConfigurationError(f"RedisOptions({name}={value!r}): must be a "
                                         "positive number of seconds")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or (
            max_connections < 1
        ):
            raise ConfigurationError(f"RedisOptions(max_connections={max_connections!r}): "
                                     "must be a whole number >= 1")
        self.socket_timeout = float(socket_timeout)
        self.socket_connect_timeout = float(socket_connect_timeout)
        self.max_connections = max_connections
        self.pool_timeout = float(pool_timeout)
        if not isinstance(batch, bool):
            raise ConfigurationError(f"RedisOptions(batch={batch!r}): must be True or False")
        self.batch = batch

    def topology_kwargs(self, url: str) -> dict[str, Any]:
        """Options for limits' cluster and sentinel storages (they build their own pools)."""
        options: dict[str, Any] = {"socket_timeout": self.socket_timeout,
                                   "socket_connect_timeout": self.socket_connect_timeout}
        if "sentinel" in url.split("://", 1)[0]:
            # limits reads from replicas by default; replication lags, so quota headers
            # read there would lag too. Everything goes to the master.
            options["use_replicas"] = False
        else:
            options["max_connections"] = self.max_connections
        return options

    def pool_kwargs(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            "max_connections": self.max_connections,
            "timeout": self.pool_timeout,
        }


def mask_url(url: str) -> str:
    """*url* with any password replaced by ``***``, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def resolve_storage_url(storage: str | None) -> str:
    """``storage``, else ``$REDIS_URL``, else ``memory://``; checked against known schemes."""
    url = storage if storage is not None else (os.environ.get("REDIS_URL") or "memory://")
    if not isinstance(url, str):
        raise ConfigurationError(f"storage={url!r}: give a URL string or a limits Storage")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    scheme = scheme.removeprefix("async+")
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"storage={mask_url(url)!r}: unknown scheme {scheme!r}; use one of "
            + ", ".join(f"{s}://" for s in _SCHEMES)
        )
    return url.split("://", 1)[0].lower().removeprefix("async+") + "://" + url.split("://", 1)[1]


def _redis_module() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ConfigurationError(
            "a redis:// storage needs the redis client: pip install 'ratelimit-mw[redis]'"
        ) from None
    return redis


def _client_url(url: str) -> str:
    # redis-py spells unix sockets 'unix://'; limits spells them 'redis+unix://'.
    return "unix://" + url.split("://", 1)[1] if url.startswith("redis+unix://") else url


def _storage_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [limits.errors.StorageError, OSError, TimeoutError]
    try:
        import redis
    except ImportError:  # pragma: no cover
        pass
    else:
        # RedisClusterException (e.g. no reachable node) is not a RedisError.
        errors += [redis.RedisError, redis.exceptions.RedisClusterException]
    return tuple(errors)


def _check_flow(plan: Plan) -> Generator[Op, Any, Decision]:
    """The one implementation of a check; yields storage operations, returns the decision.

    Limits are hit in order; once one refuses, the later ones are only read (not
    consumed), so a refused request costs nothing more than the limit that refused it.
    """
    quotas: list[Quota] = []
    refused = False
    for item in plan.items:
        allowed: bool | None = None
        if not refused:
            allowed = yield _hit(item)
            refused = not allowed
        stats: WindowStats = yield _stats(item)
        if allowed is None:
            allowed = stats.remaining >= item.cost
        reset_at = float(stats.reset_time)
        retry_after = 0.0 if allowed else max(0.0, reset_at - time.time())
        quotas.append(Quota(allowed, item.limit, max(0, int(stats.remaining)), reset_at,
                            retry_after))
    return Decision(not refused and all(q.allowed for q in quotas), plan, tuple(quotas))


class ScriptPath:
    """The one-round-trip check on a Redis storage of ``limits``.

    The strategy's Lua script is registered on the storage's own client (so it shares
    its pool, and redis-py reloads it after a ``NOSCRIPT``), and it is given the keys in
    ``limits``' layout for that strategy.
    """

    __slots__ = ("_decode", "_prefix", "_script", "_sliding", "client", "runner")

    _SOURCES: ClassVar[dict[str, str]] = {
        "fixed-window": _lua.FIXED_WINDOW, "moving-window": _lua.MOVING_WINDOW,
        "sliding-window-counter": _lua.SLIDING_WINDOW}

    def __init__(self, client: Any, prefix: str, strategy: str) -> None:
        self.client = client
        self._script = client.register_script(self._SOURCES[strategy])
        #: What sends one script call: the script itself, or a ScriptBatcher around it.
        self.runner: Callable[..., Any] = self._script
        self._prefix = prefix
        self._decode = DECODERS[strategy]
        self._sliding = strategy == "sliding-window-counter"

    @classmethod
    def for_storage(cls, storage: Any, strategy: str) -> ScriptPath | None:
        """The script path for *storage*, or ``None`` where it has no redis-py client."""
        try:
            from limits.aio.storage.redis.redispy import RedispyBridge
        except ImportError:  # pragma: no cover - limits without the redis bridge
            RedispyBridge = ()  # type: ignore[assignment,misc]  # noqa: N806
        if isinstance(storage, limits.storage.RedisStorage):
            if storage.target_server != "redis":
                return None
            return cls(storage.get_connection(), storage.key_prefix, strategy)
        if isinstance(storage, limits.aio.storage.RedisStorage) and isinstance(
            storage.bridge, RedispyBridge
        ):
            return cls(storage.bridge.get_connection(), storage.bridge.key_prefix, strategy)
        return None

    def batch(self) -> ScriptBatcher:
        """Send the calls of one event-loop tick as one pipeline (asyncio clients)."""
        batcher = ScriptBatcher(self.client, self._script)
        self.runner = batcher
        return batcher

    def flow(self, plan: Plan) -> Generator[Op, Any, Decision]:
        """One script call for the whole plan; the quotas decoded from its reply."""
        keys: list[str] = []
        args: list[int] = [len(plan.items)]
        prefix = self._prefix
        for item in plan.items:
            key = item_key(item)
            if self._sliding:
                current = f"{prefix}:{{{key}}}"
                keys += (f"{current}/-1", current)
            else:
                keys.append(f"{prefix}:{key}")
            args += (item.limit.amount, item.limit.get_expiry(), item.cost)
        runner = self.runner
        values = yield lambda _strategy: runner(keys=keys, args=args)
        quotas = self._decode(plan, [int(v) for v in values], time.time())
        return Decision(all(q.allowed for q in quotas), plan, quotas)


def _hit(item: PlanItem) -> Op:
    return lambda strategy: strategy.hit(item.limit, item.key, cost=item.cost)


def _stats(item: PlanItem) -> Op:
    return lambda strategy: strategy.get_window_stats(item.limit, item.key)


class _Limiter:
    """What the sync and async limiters share: configuration, parsing, plan building."""

    _strategies: dict[str, Any]
    #: Whether script calls may be gathered per event-loop tick (asyncio only).
    _batches = False

    def __init__(
        self,
        storage: str | Any | None = None,
        *,
        strategy: Strategy = "fixed-window",
        redis_options: RedisOptions | None = None,
        on_storage_event: EventHook | None = None,
    ) -> None:
        if strategy not in self._strategies:
            raise ConfigurationError(
                f"strategy={strategy!r}: use one of {', '.join(self._strategies)}"
            )
        self.redis_options = redis_options or RedisOptions()
        self.strategy_name: Strategy = strategy
        self._errors = _storage_errors()
        self._items: dict[str, RateLimitItem] = {}
        #: The in-process store for ``memory://``; ``None`` for every other storage.
        self.memory: MemoryStore | None = None
        self._scripts: ScriptPath | None = None
        self._batcher: ScriptBatcher | None = None
        self._needs_init = False
        self._init_lock: asyncio.Lock | None = None
        self.strategy: Any = None
        self.storage: Any
        if isinstance(storage, str) or storage is None:
            self.url = resolve_storage_url(storage)
            if self.url.startswith("memory://"):
                self.memory = self.storage = MemoryStore(strategy)
                return
            # One key prefix per strategy: the strategies keep different Redis types under
            # the same limits key, so switching strategy must not meet the old keys.
            self.storage = self._make_storage(self.url, f"{KEY_PREFIX}:{strategy}")
        else:
            self.url = getattr(storage, "uri", None) or type(storage).__name__
            self.storage = self._adopt_storage(storage)
        try:
            self.strategy = self._strategies[strategy](self.storage)
        except NotImplementedError:
            raise ConfigurationError(
                f"strategy={strategy!r} is not supported by {type(self.storage).__name__}"
            ) from None
        self.breaker = CircuitBreaker(on_event=on_storage_event,
                                      name=f"rate limit storage {mask_url(str(self.url))}")
        self._skipped = f"{mask_url(str(self.url))} failed recently; skipped until a probe"
        # Redis storages check a whole plan in one script call; others (memcached,
        # MongoDB, ...) go through limits' strategies, one call per operation.
        self._scripts = ScriptPath.for_storage(self.storage, strategy)
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        self._needs_init = type(client).__name__ == "RedisCluster" and hasattr(
            client, "initialize")
        # A cluster routes each call by its key's slot: it is not batched.
        self._batcher = self._scripts.batch() if (
            self._scripts is not None and self._batches and self.redis_options.batch
            and type(self._scripts.client).__name__ == "Redis") else None

    def _flow(self, plan: Plan) -> Generator[Op, Any, Decision]:
        return self._scripts.flow(plan) if self._scripts else _check_flow(plan)

    def _in_memory(self, memory: MemoryStore, plan: Plan, consume: bool = True) -> Decision:
        # No I/O: the sync and the async limiter both call this directly.
        quotas = memory.quotas(plan, consume=consume)
        if len(quotas) == 1:
            return Decision(quotas[0].allowed, plan, quotas)
        return Decision(all(q.allowed for q in quotas), plan, quotas)

    def _make_storage(self, url: str, key_prefix: str) -> Any:
        raise NotImplementedError

    def _adopt_storage(self, storage: Any) -> Any:
        raise NotImplementedError

    def _item(self, limit: str | RateLimitItem) -> RateLimitItem:
        if isinstance(limit, RateLimitItem):
            return limit
        item = self._items.get(limit)
        if item is None:
            try:
                parsed = parse(limit)
            except ValueError:
                raise ConfigurationError(f"{limit!r} is not a rate limit; write e.g. "
                                         "'10/minute'") from None
            item = type(parsed)(parsed.amount, parsed.multiples, namespace=NAMESPACE)
            if len(self._items) < 1024:
                self._items[limit] = item
        return item

    def _plan(self, limit: str | RateLimitItem, identifiers: tuple[str, ...],
              cost: int) -> Plan:
        if not identifiers:
            raise ConfigurationError("give at least one identifier, e.g. hit('10/minute', "
                                     "'user:42')")
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ConfigurationError(f"cost={cost!r}: must be a whole number >= 1")
        key = storage_key(*identifiers)
        return Plan("/".join(identifiers), key, (PlanItem(self._item(limit), key, cost,
                                                           "limit"),))

    def _wrap(self, exc: BaseException) -> StorageError:
        return StorageError(f"{type(exc).__name__}: {exc} (storage {mask_url(self.url)})")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({mask_url(str(self.url))!r}, "
                f"strategy={self.strategy_name!r})")


class RateLimiter(_Limiter):
    """A rate limiter on a sync ``limits`` storage: for WSGI, jobs, scripts.

    *storage* is a URL (``memory://``, ``redis://``, ``rediss://``, ``redis+unix://``,
    ``redis+cluster://``, ``redis+sentinel://``), ``None`` for ``$REDIS_URL`` else memory,
    or a ``limits.storage.Storage`` you built.

    Example::

        limiter = RateLimiter("redis://localhost:6379/0", strategy="sliding-window-counter")
        quota = limiter.hit("10/minute", "user:42")
        if not quota.allowed:
            print(f"retry in {quota.retry_after:.0f}s")

    Identifiers are escaped before they become part of a storage key, so no two tuples of
    identifiers share a counter.
    """

    _strategies = _SYNC_STRATEGIES

    def _make_storage(self, url: str, key_prefix: str) -> Any:
        scheme = url.split("://", 1)[0]
        if scheme in _REDIS_SCHEMES:
            redis = _redis_module()
            pool = redis.BlockingConnectionPool.from_url(
                _client_url(url), **self.redis_options.pool_kwargs()
            )
            return limits.storage.RedisStorage(url, connection_pool=pool, key_prefix=key_prefix,
                                               wrap_exceptions=True)
        if scheme in _OTHER_SCHEMES:  # cluster, sentinel: name the extra, as above
            _redis_module()
        return limits.storage.storage_from_string(url, key_prefix=key_prefix,
                                                  wrap_exceptions=True,
                                                  **self.redis_options.topology_kwargs(url))

    def _adopt_storage(self, storage: Any) -> Any:
        if not isinstance(storage, limits.storage.Storage):
            raise ConfigurationError(
                f"storage={storage!r}: RateLimiter takes a URL or a limits.storage.Storage "
                "(for limits.aio storages use AsyncRateLimiter)"
            )
        return storage

    def _run(self, flow: Generator[Op, Any, Decision]) -> Decision:
        if not self.breaker.allow():
            raise StorageUnavailableError(self._skipped)
        try:
            op = next(flow)
            while True:
                op = flow.send(op(self.strategy))
        except StopIteration as done:
            self.breaker.success()
            return done.value  # type: ignore[no-any-return]
        except Exception as exc:
            # Only storage calls run here: whatever they raise (a redis-py error, or a
            # RuntimeError from a connection closed under it) is a storage failure, for
            # on_storage_error to decide, never a 500.
            error = self._wrap(exc)
            self.breaker.failure(error)
            raise error from exc
        except BaseException:
            # Cancelled (a client went away) or a bug: no answer about the storage, so
            # a probe must not stay reserved for ever.
            self.breaker.abandoned()
            raise

    def check(self, plan: Plan) -> Decision:
        """Hit every limit of *plan* and return the decision with every quota."""
        if self.memory is not None:
            return self._in_memory(self.memory, plan)
        return self._run(self._flow(plan))

    def hit(self, limit: str | RateLimitItem, *identifiers: str, cost: int = 1) -> Quota:
        """Consume *cost* from *limit* for *identifiers*; the quota after the hit."""
        return self.check(self._plan(limit, identifiers, cost)).quotas[0]

    def peek(self, limit: str | RateLimitItem, *identifiers: str) -> Quota:
        """The quota of *limit* for *identifiers*, without consuming it."""
        plan = self._plan(limit, identifiers, 1)
        if self.memory is not None:
            return self._in_memory(self.memory, plan, consume=False).quotas[0]
        try:
            stats = self.strategy.get_window_stats(plan.items[0].limit, plan.items[0].key)
        except self._errors as exc:
            raise self._wrap(exc) from exc
        return _peek_quota(plan.items[0], stats)

    def reset(self, limit: str | RateLimitItem, *identifiers: str) -> None:
        """Clear the counter of *limit* for *identifiers*."""
        plan = self._plan(limit, identifiers, 1)
        if self.memory is not None:
            self.memory.clear(limit_key(plan.items[0].limit, plan.items[0].key))
            return
        try:
            self.strategy.clear(plan.items[0].limit, plan.items[0].key)
        except self._errors as exc:
            raise self._wrap(exc) from exc

    def ping(self) -> bool:
        """``True`` when the storage answers."""
        if self.memory is not None:
            return True
        return bool(self.storage.check())

    def close(self) -> None:
        """Release the storage's connections (pools, a Sentinel's clients too)."""
        for client in _clients(self.storage):
            client.close()
            pool = getattr(client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()


class AsyncRateLimiter(_Limiter):
    """A rate limiter on a ``limits.aio`` storage: for ASGI apps and asyncio code.

    Redis storages use redis-py's asyncio client (``implementation="redispy"``) with a
    blocking connection pool; nothing here blocks the event loop.

    Example::

        limiter = AsyncRateLimiter("redis://localhost:6379/0")
        quota = await limiter.hit("10/minute", "user:42")
        await limiter.aclose()

    Identifiers are escaped before they become part of a storage key, so no two tuples of
    identifiers share a counter.
    """

    _strategies = _ASYNC_STRATEGIES
    _batches = True

    def _make_storage(self, url: str, key_prefix: str) -> Any:
        scheme = url.split("://", 1)[0]
        if scheme in _REDIS_SCHEMES:
            redis = _redis_module()
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                _client_url(url), **self.redis_options.pool_kwargs()
            )
            return limits.aio.storage.RedisStorage(
                "async+" + url, implementation="redispy", connection_pool=pool,
                key_prefix=key_prefix, wrap_exceptions=True,
            )
        if scheme in _OTHER_SCHEMES:  # cluster, sentinel: name the extra, as above
            _redis_module()
        return limits.storage.storage_from_string(
            "async+" + url, implementation="redispy", key_prefix=key_prefix,
            wrap_exceptions=True, **self.redis_options.topology_kwargs(url),
        )

    def _adopt_storage(self, storage: Any) -> Any:
        if not isinstance(storage, limits.aio.storage.Storage):
            raise ConfigurationError(
                f"storage={storage!r}: AsyncRateLimiter takes a URL or a "
                "limits.aio.storage.Storage (for sync storages use RateLimiter)"
            )
        return storage

    async def _run(self, flow: Generator[Op, Any, Decision]) -> Decision:
        if not self.breaker.allow():
            raise StorageUnavailableError(self._skipped)
        try:
            if self._needs_init:
                await self._initialize()
            op = next(flow)
            while True:
                op = flow.send(await op(self.strategy))
        except StopIteration as done:
            self.breaker.success()
            return done.value  # type: ignore[no-any-return]
        except Exception as exc:
            # Only storage calls run here: whatever they raise (a redis-py error, or a
            # RuntimeError from a connection closed under it) is a storage failure, for
            # on_storage_error to decide, never a 500.
            error = self._wrap(exc)
            self.breaker.failure(error)
            raise error from exc
        except BaseException:
            # Cancelled (a client went away) or a bug: no answer about the storage, so
            # a probe must not stay reserved for ever.
            self.breaker.abandoned()
            raise

    async def _initialize(self) -> None:
        # redis-py's async RedisCluster routes nothing by slot until initialize() ran;
        # concurrent first commands then meet MOVED replies, and after a few of those it
        # closes connections other requests are using. Initialise once, first.
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._needs_init:
                await self.storage.bridge.storage.initialize()
                self._needs_init = False

    def check_nowait(self, plan: Plan) -> Decision | None:
        """The decision for *plan* when it needs no I/O (``memory://``), else ``None``.

        Saves the ASGI middleware a coroutine per request on memory storage.
        """
        if self.memory is not None:
            return self._in_memory(self.memory, plan)
        return None

    async def acheck(self, plan: Plan) -> Decision:
        """Hit every limit of *plan* and return the decision with every quota."""
        if self.memory is not None:
            return self._in_memory(self.memory, plan)
        return await self._run(self._flow(plan))

    async def hit(self, limit: str | RateLimitItem, *identifiers: str, cost: int = 1) -> Quota:
        """Consume *cost* from *limit* for *identifiers*; the quota after the hit."""
        return (await self.acheck(self._plan(limit, identifiers, cost))).quotas[0]

    async def peek(self, limit: str | RateLimitItem, *identifiers: str) -> Quota:
        """The quota of *limit* for *identifiers*, without consuming it."""
        plan = self._plan(limit, identifiers, 1)
        if self.memory is not None:
            return self._in_memory(self.memory, plan, consume=False).quotas[0]
        try:
            stats = await self.strategy.get_window_stats(plan.items[0].limit,
                                                         plan.items[0].key)
        except self._errors as exc:
            raise self._wrap(exc) from exc
        return _peek_quota(plan.items[0], stats)

    async def reset(self, limit: str | RateLimitItem, *identifiers: str) -> None:
        """Clear the counter of *limit* for *identifiers*."""
        plan = self._plan(limit, identifiers, 1)
        if self.memory is not None:
            self.memory.clear(limit_key(plan.items[0].limit, plan.items[0].key))
            return
        try:
            await self.strategy.clear(plan.items[0].limit, plan.items[0].key)
        except self._errors as exc:
            raise self._wrap(exc) from exc

    async def ping(self) -> bool:
        """``True`` when the storage answers."""
        if self.memory is not None:
            return True
        return bool(await self.storage.check())

    async def aclose(self) -> None:
        """Release the storage's connections (pools, a Sentinel's clients too)."""
        if self._batcher is not None:
            await self._batcher.aclose()
        for client in _clients(getattr(self.storage, "bridge", None)):
            await client.aclose()
            pool = getattr(client, "connection_pool", None)
            if pool is not None:
                await pool.disconnect()


def _clients(holder: Any) -> list[Any]:
    """The redis-py clients a limits storage (or its async bridge) holds, once each."""
    if holder is None:
        return []
    found = [getattr(holder, name, None) for name in ("storage", "storage_slave",
                                                      "storage_replica")]
    found += list(getattr(getattr(holder, "sentinel", None), "sentinels", ()))
    unique: list[Any] = []
    for client in found:
        if client is not None and hasattr(client, "close") and all(
                client is not seen for seen in unique):
            unique.append(client)
    return unique


def _peek_quota(item: PlanItem, stats: WindowStats) -> Quota:
    remaining = max(0, int(stats.remaining))
    allowed = remaining >= item.cost
    reset_at = float(stats.reset_time)
    return Quota(allowed, item.limit, remaining, reset_at,
                 0.0 if allowed else max(0.0, reset_at - time.time()))

