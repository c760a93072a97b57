"""What the ASGI and WSGI cache middlewares share: their options, policy and store."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from ._flow import CachePolicy, CacheRule

__all__ = ["CacheMiddlewareBase"]


class _Store(Protocol):
    @property
    def connected(self) -> bool: ...


AppT = TypeVar("AppT")
StoreT = TypeVar("StoreT", bound=_Store)


class CacheMiddlewareBase(Generic[AppT, StoreT]):
    """The options of both middlewares, checked once (`CachePolicy`), and their store.

    *cache* ``None`` is the subclass's Redis store on ``$REDIS_URL`` when it is set, else
    its memory store (`_default_cache`).
    """

    def __init__(
        self,
        app: AppT,
        *,
        cache: StoreT | None = None,
        rules: Iterable[CacheRule] = (),
        default_ttl: int = 0,
        allowed_hosts: Iterable[str] | None = None,
        max_body_size: int = 1 << 20,
        lock_wait: float = 5.0,
        extra_key_headers: Iterable[str] = (),
        keep_stale: int = 300,
        targeted_field: str | None = None,
    ) -> None:
        self.app = app
        self.policy = CachePolicy.build(rules, default_ttl, allowed_hosts, max_body_size,
                                        lock_wait, extra_key_headers, keep_stale,
                                        targeted_field)
        self.cache: StoreT = (cache if cache is not None
                              else self._default_cache(os.environ.get("REDIS_URL")))

    def _default_cache(self, url: str | None) -> StoreT:
        raise NotImplementedError

    def _connected(self) -> bool:
        """The store's circuit breaker, for `lookup` (a read, no I/O)."""
        return self.cache.connected
