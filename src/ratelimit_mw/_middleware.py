"""What the ASGI and WSGI rate-limit middlewares share: one configuration, one policy."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._core import Decision, Plan
from ._options import MiddlewareKwargs, MiddlewareOptions
from ._routes import RouteLoader
from ._storage.limiter import AsyncRateLimiter, RateLimiter
from ._storage.memory import MemoryStore
from .errors import ConfigurationError, StorageError, StorageUnavailableError
from .events import RateLimitEvent, safe_emit

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("ratelimit_mw.middleware")

L = TypeVar("L", RateLimiter, AsyncRateLimiter)
#: The wrapped application's type: an ASGI or a WSGI app.
A = TypeVar("A")


class MiddlewareBase(Generic[L, A]):
    """Builds the policy, the header renderer and the limiter from `MiddlewareOptions`.

    *limited_app* answers refused requests (the subclass's default: a 429 problem body).
    """

    _limiter_class: type[L]
    #: The limiter requests are checked with; set only when enabled (``limiter`` is the
    #: public view, ``None`` on a disabled middleware that was given none).
    _checker: L
    _protocol: str  # "ASGI" or "WSGI", for messages
    _too_many_requests: Any

    def __init__(self, app: A, *, limited_app: A | None = None,
                 **options: Unpack[MiddlewareKwargs]) -> None:
        if limited_app is not None and not callable(limited_app):
            raise ConfigurationError(f"limited_app must be a {self._protocol} application")
        self.app = app
        self.limited_app: A = limited_app or self._too_many_requests
        self.options = settings = MiddlewareOptions(**options)
        self.policy = settings.policy()
        self._on_event = settings.on_event
        self.renderer = settings.renderer()
        self.on_storage_error = settings.on_storage_error
        self.enabled = settings.enabled
        limiter = settings.limiter
        if limiter is not None and not isinstance(limiter, self._limiter_class):
            raise ConfigurationError(
                f"limiter={limiter!r}: this middleware needs a "
                f"{self._limiter_class.__name__}"
            )
        self._fallback: MemoryStore | None = None
        #: Reads the app's routes once (``@limit``, the drift check); ``None`` once done.
        self._routes: RouteLoader | None = RouteLoader() if settings.enabled else None
        if not settings.enabled:
            # Off means off: building a limiter may open a pool or resolve a URL, and a
            # switched-off middleware must not depend on a storage being there.
            self.limiter: L | None = limiter
            return
        if limiter is None:
            limiter = self._limiter_class(
                settings.storage, strategy=settings.strategy,
                redis_options=settings.redis_options, on_event=settings.on_event,
                on_storage_event=settings.on_storage_event,
                local_denials=settings.local_denials)
        self.limiter = self._checker = limiter
        scripted = [rule.template for rule in self.policy.table.rules
                    if rule.settle or rule.penalty or rule.strategy or rule.concurrency]
        if scripted and not limiter.can_settle:
            raise ConfigurationError(
                f"Rule({scripted[0]!r}): count_when, response_cost, penalty, strategy, "
                f"burst, align and concurrency need memory:// or Redis (they are decided "
                f"in our scripts); {limiter.display_url} has none")
        # "memory": the same rules, counted in this process, while the storage is down.
        if settings.on_storage_error == "memory":
            self._fallback = MemoryStore(limiter.strategy_name)

    def _load_routes(self, *found: object) -> None:
        """Add the rules declared on the app's routes to the policy, once.

        Called at lifespan startup or the first request, with what the server or the
        framework handed over (``scope["app"]``); the wrapped app is searched after it.
        """
        loader = self._routes
        if loader is None:
            return
        policy = loader.load(self.options, (*found, self.app))
        if policy is not None:
            self.policy = policy
        self._routes = None

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
                local=decision.local,
                storage_seconds=time.perf_counter() - started,
                error=None if isinstance(error, StorageUnavailableError) else error,
            ))
        return through

    def _decide(self, plan: Plan) -> tuple[Decision, StorageError | None]:
        """The sync limiter's decision for *plan*, else ``on_storage_error``'s, with the
        storage error that made it so."""
        checker: Any = self._checker
        try:
            return checker.check(plan), None
        except StorageError as error:
            return self._storage_failed(plan, error), error

    async def _adecide(self, plan: Plan) -> tuple[Decision, StorageError | None]:
        """`_decide` on the async limiter (callers try ``check_nowait`` first)."""
        checker: Any = self._checker
        try:
            return await checker.acheck(plan), None
        except StorageError as error:
            return self._storage_failed(plan, error), error

    def _release_nowait(self, decision: Decision) -> bool:
        """End *decision*'s lease without I/O where it can be (memory, the fallback's
        leases); ``False`` when the limiter must call its storage."""
        if decision.storage_error:
            if self._fallback is not None and decision.lease:
                self._fallback.release(decision.plan, decision.lease)
            return True
        return self._checker.release_nowait(decision)

    def release(self, decision: Decision) -> None:
        """End *decision*'s lease where it was taken (the fallback's, in an outage): the
        sync limiter's."""
        if not self._release_nowait(decision):
            checker: Any = self._checker
            checker.release(decision)

    async def arelease(self, decision: Decision) -> None:
        """`release` on the async limiter."""
        if not self._release_nowait(decision):
            checker: Any = self._checker
            await checker.arelease(decision)

    def _storage_failed(self, plan: Plan, error: StorageError) -> Decision:
        """Apply ``on_storage_error`` when the storage could not decide.

        The limiter's circuit breaker logs the outage once and skips the storage until it
        answers a probe again, so this runs without network waits while it is down.
        """
        if self._fallback is not None:
            return self._fallback.decision(plan, storage_error=True)
        return Decision(self.on_storage_error == "allow", plan, (), storage_error=True)
