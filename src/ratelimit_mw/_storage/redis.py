"""Storage URLs and Redis connections: what the limiters and the Redis caches share.

redis-py waits 5 s on a dead socket and its default pool *raises* past 100 connections;
in front of an API both are wrong. Every pool built here is a blocking pool (requests wait
up to ``pool_timeout`` for a free connection) with sub-second socket timeouts.
"""

from __future__ import annotations

import math
import os
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import limits.aio.storage
import limits.errors
import limits.storage

from ..errors import ConfigurationError

__all__ = ["KEY_PREFIX", "RedisOptions", "client_url", "clients", "make_storage",
           "mask_url", "memory_max_keys", "redis_module", "resolve_storage_url",
           "storage_errors"]

#: The first part of every Redis key we write: ``rlmw:<strategy>:rl/{<rule>/<identity>}/...``.
KEY_PREFIX = "rlmw"
_REDIS_SCHEMES = ("redis", "rediss", "redis+unix")
_OTHER_SCHEMES = ("redis+cluster", "redis+sentinel")
_SCHEMES = ("memory", *_REDIS_SCHEMES, *_OTHER_SCHEMES)


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
        """Options for redis-py's ``BlockingConnectionPool.from_url``."""
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
    resolved = scheme + "://" + url.split("://", 1)[1]
    if scheme == "memory":
        memory_max_keys(resolved)  # a bad option fails here, at configuration
    return resolved


def memory_max_keys(url: str) -> int:
    """The ``max_keys`` of a ``memory://?max_keys=N`` URL; the store's default without it."""
    from .memory import DEFAULT_MAX_KEYS

    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    unknown = set(query) - {"max_keys"}
    if unknown:
        raise ConfigurationError(f"storage={url!r}: unknown option(s) {sorted(unknown)}; "
                                 "memory:// takes max_keys")
    raw = query.get("max_keys", [str(DEFAULT_MAX_KEYS)])[-1]
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(f"storage={url!r}: max_keys={raw!r} must be a whole "
                                 "number >= 1")
    return int(raw)


def redis_module() -> Any:
    """The ``redis`` package, or a `ConfigurationError` that names the extra to install."""
    try:
        import redis
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ConfigurationError(
            "a redis:// storage needs the redis client: pip install 'ratelimit-mw[redis]'"
        ) from None
    return redis


def client_url(url: str) -> str:
    """*url* as redis-py spells it: ``unix://`` where ``limits`` says ``redis+unix://``."""
    return "unix://" + url.split("://", 1)[1] if url.startswith("redis+unix://") else url


def storage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the storage failed (never a bug of ours)."""
    errors: list[type[BaseException]] = [limits.errors.StorageError, OSError, TimeoutError]
    try:
        import redis
    except ImportError:  # pragma: no cover
        pass
    else:
        # RedisClusterException (e.g. no reachable node) is not a RedisError.
        errors += [redis.RedisError, redis.exceptions.RedisClusterException]
    return tuple(errors)


def make_storage(url: str, key_prefix: str, options: RedisOptions, *,
                 asynchronous: bool) -> Any:
    """A ``limits`` storage (``limits.aio`` on redis-py when *asynchronous*) for *url*.

    Standalone Redis gets our blocking pool; Cluster and Sentinel storages build their own
    pools from `RedisOptions.topology_kwargs`. Errors are wrapped by ``limits``
    (``wrap_exceptions``) so that every storage failure arrives as one error type.
    """
    scheme = url.split("://", 1)[0]
    redis = redis_module()  # names the extra to install before limits fails to import it
    extra: dict[str, Any] = {"implementation": "redispy"} if asynchronous else {}
    name = "async+" + url if asynchronous else url
    if scheme in _REDIS_SCHEMES:
        pools = redis.asyncio if asynchronous else redis
        pool = pools.BlockingConnectionPool.from_url(client_url(url), **options.pool_kwargs())
        storage_class = limits.aio.storage.RedisStorage if asynchronous else (
            limits.storage.RedisStorage)
        return storage_class(name, connection_pool=pool, key_prefix=key_prefix,
                             wrap_exceptions=True, **extra)
    return limits.storage.storage_from_string(name, key_prefix=key_prefix,
                                              wrap_exceptions=True, **extra,
                                              **options.topology_kwargs(url))


def clients(holder: Any) -> list[Any]:
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
