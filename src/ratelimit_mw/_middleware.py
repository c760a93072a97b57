"""What the ASGI and WSGI rate-limit middlewares share: one configuration, one policy."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Generic, Literal, TypeVar

from ._breaker import EventHook as StorageEventHook
from ._breaker import StorageEvent
from ._core import Decision, Plan, Policy
from ._headers import HeaderRenderer
from ._rules import LimitsSpec, Rule
from ._storage.limiter import AsyncRateLimiter, RateLimiter, RedisOptions, Strategy
from ._storage.memory import MemoryStore
from .errors import ConfigurationError, StorageError, StorageUnavailableError
from .events import EventHook, RateLimitEvent, safe_emit
from .keys import KeyFunc

logger = logging.getLogger("ratelimit_mw.middleware")

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
        on_storage_event: StorageEventHook | None = None,
        on_event: EventHook | None = None,
        shadow: bool = False,
    ) -> None:
        self.policy = Policy(default_limits=default_limits, key=key, rules=rules,
                             shadow=shadow)
        if on_event is not None and not callable(on_event):
            raise ConfigurationError("on_event must be a callable taking a RateLimitEvent")
        self._on_event = on_event
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
            self.limiter = self._limiter_class(
                storage, strategy=strategy, redis_options=redis_options,
                on_storage_event=_storage_events(on_storage_event, on_event))
        # "memory": the same rules, counted in this process, while the storage is down.
        self._fallback = MemoryStore(self.limiter.strategy_name) if (
            on_storage_error == "memory") else None

    def _report(self, plan: Plan, decision: Decision, started: float,
                error: StorageError | None) -> bool:
        """Log and emit the decision; ``True`` when the request goes through (allowed,
        or refused in shadow mode)."""
        through = decision.allowed or plan.shadow
        if not decision.allowed:
            if plan.shadow:
                logger.info("shadow: %s would have refused %s", plan.rule, plan.identity)
            else:
                logger.debug("%s refused %s", plan.rule, plan.identity)
        if self._on_event is not None:
            safe_emit(self._on_event, RateLimitEvent(
                "allowed" if decision.allowed else "limited", plan.rule,
                shadow=not decision.allowed and plan.shadow,
                fallback=decision.storage_error,
                storage_seconds=time.perf_counter() - started,
                error=None if isinstance(error, StorageUnavailableError) else error,
            ))
        return through

    def _storage_failed(self, plan: Plan, error: StorageError) -> Decision:
        """Apply ``on_storage_error`` when the storage could not decide.

        The limiter's circuit breaker logs the outage once and skips the storage until it
        answers a probe again, so this runs without network waits while it is down.
        """
        if self._fallback is not None:
            quotas = self._fallback.quotas(plan)
            return Decision(all(q.allowed for q in quotas), plan, quotas, storage_error=True)
        return Decision(self.on_storage_error == "allow", plan, (), storage_error=True)


def _storage_events(storage_hook: StorageEventHook | None,
                    hook: EventHook | None) -> StorageEventHook | None:
    """One breaker hook that feeds both the storage hook and the general event hook."""
    if hook is None:
        return storage_hook

    def both(event: StorageEvent, error: BaseException | None) -> None:
        try:
            if storage_hook is not None:
                storage_hook(event, error)
        finally:
            # A failing storage hook is the breaker's to log; on_event (and the metrics
            # on it) must still hear of the outage.
            safe_emit(hook, RateLimitEvent(event, error=error))

    return both
