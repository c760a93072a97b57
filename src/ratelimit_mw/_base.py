"""What the ASGI and WSGI rate-limit middlewares share: one configuration, one policy."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Generic, Literal, TypeVar

from .backends import AsyncRateLimiter, RateLimiter, RedisOptions, Strategy
from .core import Decision, Plan, Policy
from .errors import ConfigurationError, StorageError
from .headers import HeaderRenderer
from .keys import KeyFunc
from .rules import LimitsSpec, Rule

logger = logging.getLogger("ratelimit_mw")

OnStorageError = Literal["allow", "deny"]
_ON_ERROR = ("allow", "deny")
_LOG_EVERY = 30.0  # seconds between two storage-error log lines

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
        on_storage_error: OnStorageError = "allow",
        redis_options: RedisOptions | None = None,
    ) -> None:
        self.policy = Policy(default_limits=default_limits, key=key, rules=rules)
        self.renderer = HeaderRenderer(headers)
        if on_storage_error not in _ON_ERROR:
            raise ConfigurationError(
                f"on_storage_error={on_storage_error!r}: use one of {', '.join(_ON_ERROR)}"
            )
        self.on_storage_error = on_storage_error
        if limiter is not None:
            if storage is not None or redis_options is not None or strategy != "fixed-window":
                raise ConfigurationError(
                    "give limiter= or storage=/strategy=/redis_options=, not both: "
                    "the limiter already has its storage and strategy"
                )
            if not isinstance(limiter, self._limiter_class):
                raise ConfigurationError(
                    f"limiter={limiter!r}: this middleware needs a "
                    f"{self._limiter_class.__name__}"
                )
            self.limiter: L = limiter
        else:
            self.limiter = self._limiter_class(storage, strategy=strategy,
                                               redis_options=redis_options)
        self._last_error_log = 0.0

    def _storage_failed(self, plan: Plan, error: StorageError) -> Decision:
        """Apply ``on_storage_error`` when the storage could not decide."""
        now = time.monotonic()
        if now - self._last_error_log >= _LOG_EVERY:
            self._last_error_log = now
            logger.warning("rate limit storage failed (%s); on_storage_error=%s",
                           error, self.on_storage_error)
        return Decision(self.on_storage_error == "allow", plan, (), storage_error=True)
