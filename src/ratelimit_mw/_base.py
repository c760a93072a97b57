"""What the ASGI and WSGI rate-limit middlewares share: one configuration, one policy."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, Generic, Literal, TypeVar

from .backends import AsyncRateLimiter, RateLimiter, RedisOptions, Strategy
from .breaker import EventHook
from .core import Decision, Plan, Policy
from .errors import ConfigurationError, StorageError
from .headers import HeaderRenderer
from .keys import KeyFunc
from .memory import MemoryStore
from .rules import LimitsSpec, Rule
from .windows import DECODERS

OnStorageError = Literal["allow", "deny", "memory"]
_ON_ERROR = ("allow", "deny", "memory")

L = TypeVar("L", RateLimiter, AsyncRateLimiter)


class MiddlewareBase(Generic[L]):
    """Builds the policy, the header renderer and the limiter from the middleware options."""

    _limiter_class: type[L]

    def __init__(
        self,
        *,
        storage: str | Any | None = None,
        limiter: L | None = None,
        default_limits: LimitsSpec | None = None,
        key: KeyFunc | Sequence[KeyFunc] | None = None,
        rules: Iterable[Rule] = (),
        strategy: Strategy = "fixed-window",
        headers: str = "both",
        on_storage_error: OnStorageError = "memory",
        redis_options: RedisOptions | None = None,
        on_storage_event: EventHook | None = None,
    ) -> None:
        self.policy = Policy(default_limits=default_limits, key=key, rules=rules)
        self.renderer = HeaderRenderer(headers)
        if on_storage_error not in _ON_ERROR:
            raise ConfigurationError(
                f"on_storage_error={on_storage_error!r}: use one of {', '.join(_ON_ERROR)}"
            )
        self.on_storage_error = on_storage_error
        if limiter is not None:
            if (storage is not None or redis_options is not None or strategy != "fixed-window"
                    or on_storage_event is not None):
                raise ConfigurationError(
                    "give limiter= or storage=/strategy=/redis_options=/on_storage_event=, "
                    "not both: the limiter already has its storage, strategy and hooks"
                )
            if not isinstance(limiter, self._limiter_class):
                raise ConfigurationError(
                    f"limiter={limiter!r}: this middleware needs a "
                    f"{self._limiter_class.__name__}"
                )
            self.limiter: L = limiter
        else:
            self.limiter = self._limiter_class(storage, strategy=strategy,
                                               redis_options=redis_options,
                                               on_storage_event=on_storage_event)
        # "memory": the same rules, counted in this process, while the storage is down.
        self._fallback = MemoryStore(self.limiter.strategy_name) if (
            on_storage_error == "memory") else None
        self._decode = DECODERS[self.limiter.strategy_name]

    def _storage_failed(self, plan: Plan, error: StorageError) -> Decision:
        """Apply ``on_storage_error`` when the storage could not decide.

        The limiter's circuit breaker logs the outage once and skips the storage until it
        answers a probe again, so this runs without network waits while it is down.
        """
        if self._fallback is not None:
            quotas = self._decode(plan, self._fallback.check(plan), time.time())
            return Decision(all(q.allowed for q in quotas), plan, quotas, storage_error=True)
        return Decision(self.on_storage_error == "allow", plan, (), storage_error=True)
