"""What wraps a limiter's storage calls: the circuit breaker, error wrapping, the cluster gate.

Each is a context manager, so the sync and the async limiter wrap their calls alike:
``with limiter._guarded: run(...)`` and ``with limiter._guarded: await arun(...)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from .._breaker import CircuitBreaker
from ..errors import StorageError, StorageUnavailableError
from .redis import RedisOptions

__all__ = ["ClusterGate", "Guarded", "Wrap", "Wrapped"]

#: Turns what a storage call raised into the `StorageError` the limiter raises.
Wrap = Callable[[BaseException], StorageError]


class Guarded:
    """The circuit breaker around a check: ``with limiter._guarded: ...``.

    Refuses at once while the breaker is open. Whatever a storage call raises (a redis-py
    error, or a RuntimeError from a connection closed under it) is a storage failure, for
    ``on_storage_error`` to decide, never a 500. A cancelled check (the client went away)
    says nothing about the storage, so the probe it may hold is released.
    """

    __slots__ = ("_breaker", "_skipped", "_wrap")

    def __init__(self, breaker: CircuitBreaker, wrap: Wrap, url: str) -> None:
        self._breaker = breaker
        self._wrap = wrap
        self._skipped = f"{url} failed recently; skipped until a probe"

    def __enter__(self) -> None:
        if not self._breaker.allow():
            raise StorageUnavailableError(self._skipped)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        breaker = self._breaker
        if exc is None:
            breaker.success()
        elif isinstance(exc, Exception):
            error = self._wrap(exc)
            breaker.failure(error)
            raise error from exc
        else:
            breaker.abandoned()


class ClusterGate:
    """At most ``max_connections`` cluster calls at once; the others wait, bounded.

    Each call uses one connection of one node, so no node's pool is ever exhausted. A call
    that finds no slot within ``pool_timeout`` fails as a storage error, as a standalone
    pool's timeout does.
    """

    __slots__ = ("_options", "_semaphore")

    def __init__(self, options: RedisOptions) -> None:
        self._options = options
        self._semaphore: asyncio.Semaphore | None = None  # made in the loop that uses it

    async def __aenter__(self) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._options.max_connections)
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self._options.pool_timeout)
        except asyncio.TimeoutError:
            raise TimeoutError("no free Redis Cluster connection within "
                               f"pool_timeout={self._options.pool_timeout}s") from None

    async def __aexit__(self, *exc_info: object) -> None:
        if self._semaphore is not None:  # always, once entered
            self._semaphore.release()


class Wrapped:
    """Storage errors of a peek or reset as `StorageError`: ``with limiter._wrapped: ...``.

    No circuit breaker here: these are operator actions (``inspect``, ``reset``), which
    should reach the storage and say what failed.
    """

    __slots__ = ("_errors", "_wrap")

    def __init__(self, errors: tuple[type[BaseException], ...], wrap: Wrap) -> None:
        self._errors = errors
        self._wrap = wrap

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, self._errors):
            raise self._wrap(exc) from exc
