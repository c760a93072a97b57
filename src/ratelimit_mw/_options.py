"""The rate-limit middlewares' options: named, defaulted and checked in one place.

`MiddlewareOptions` is what `RateLimitMiddleware`, `WSGIRateLimitMiddleware` and the
configuration loader (``config.py``) share. An option is added here once: a field with
its default (and its check in ``__post_init__``), and a line in `MiddlewareKwargs`, the
typed keyword arguments of both constructors (a test keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from ._core import Policy
from ._headers import HeaderMode, HeaderRenderer
from ._rules import ExemptFunc, LimitsFunc, LimitsSpec, Rule, exempt_predicate
from ._storage.redis import RedisOptions
from ._strategies import Strategy, strategy_named
from .errors import ConfigurationError
from .events import EventHook, StorageEventHook
from .keys import KeyFunc

if TYPE_CHECKING:
    from ._storage.limiter import AsyncRateLimiter, RateLimiter

__all__ = ["ON_STORAGE_ERROR", "MiddlewareKwargs", "MiddlewareOptions", "OnStorageError"]

OnStorageError = Literal["allow", "deny", "memory"]
ON_STORAGE_ERROR: tuple[OnStorageError, ...] = ("memory", "allow", "deny")
#: Options that configure the limiter the middleware builds; a given limiter has its own.
_LIMITER_OPTIONS = ("storage", "strategy", "redis_options", "on_storage_event",
                    "local_denials")


@dataclass(frozen=True, kw_only=True)
class MiddlewareOptions:
    """Everything the rate-limit middlewares take besides the app, checked on creation.

    Example::

        options = MiddlewareOptions(default_limits="100/minute",
                                    rules=[Rule("/login", "5/minute")])
        RateLimitMiddleware(app, **options.kwargs())

    Every mistake raises `ConfigurationError` naming the option, before any request.
    """

    storage: str | Any | None = None
    limiter: RateLimiter | AsyncRateLimiter | None = None
    default_limits: LimitsSpec | LimitsFunc | None = None
    key: KeyFunc | Sequence[KeyFunc] | None = None
    rules: Iterable[Rule] = ()
    strategy: Strategy = "fixed-window"
    headers: HeaderMode = "both"
    on_storage_error: OnStorageError = "memory"
    redis_options: RedisOptions | None = None
    on_event: EventHook | None = None
    on_storage_event: StorageEventHook | None = None
    shadow: bool = False
    exempt_when: ExemptFunc | None = None
    enabled: bool = True
    global_limits: LimitsSpec | None = None
    #: Repeat a refusal the storage made, without asking it again, for as long as it
    #: holds (an LRU of refused clients per process; see docs/storage.md).
    local_denials: bool = True

    def __post_init__(self) -> None:
        if self.limiter is None:
            strategy_named(self.strategy)
        else:
            given = [name for name in _LIMITER_OPTIONS
                     if getattr(self, name) != _DEFAULTS[name]]
            if given:
                raise ConfigurationError(
                    "give limiter= or storage=/strategy=/redis_options=/on_storage_event=/"
                    "local_denials=, not both: the limiter already has its storage, "
                    "strategy and hooks")
        if not isinstance(self.enabled, bool):
            # A truthy string such as "false" would otherwise leave the limiter on.
            raise ConfigurationError(f"enabled={self.enabled!r}: must be True or False")
        HeaderRenderer(self.headers)  # raises for an unknown mode
        if self.on_storage_error not in ON_STORAGE_ERROR:
            raise ConfigurationError(f"on_storage_error={self.on_storage_error!r}: use one "
                                     f"of {', '.join(ON_STORAGE_ERROR)}")
        if self.on_event is not None and not callable(self.on_event):
            raise ConfigurationError("on_event must be a callable taking a RateLimitEvent")
        exempt_predicate(self.exempt_when)
        # Tuples: a generator of rules is read once, here, and the options stay immutable.
        object.__setattr__(self, "rules", (self.rules,) if isinstance(self.rules, Rule)
                           else tuple(self.rules) if isinstance(self.rules, Iterable)
                           else self.rules)

    def policy(self) -> Policy:
        """The `Policy` these options describe (rules, defaults, global limits, keys,
        shadow mode, exemptions)."""
        return Policy(default_limits=self.default_limits, key=self.key, rules=self.rules,
                      shadow=self.shadow, exempt_when=self.exempt_when,
                      global_limits=self.global_limits)

    def renderer(self) -> HeaderRenderer:
        """The header renderer for the ``headers`` mode."""
        return HeaderRenderer(self.headers)

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments (for a middleware's constructor)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_DEFAULTS = {f.name: f.default for f in fields(MiddlewareOptions)}


class MiddlewareKwargs(TypedDict, total=False):
    """The keyword arguments of both rate-limit middlewares: `MiddlewareOptions`' fields."""

    storage: str | Any | None
    limiter: Any
    default_limits: LimitsSpec | LimitsFunc | None
    key: KeyFunc | Sequence[KeyFunc] | None
    rules: Iterable[Rule]
    strategy: Strategy
    headers: HeaderMode
    on_storage_error: OnStorageError
    redis_options: RedisOptions | None
    on_event: EventHook | None
    on_storage_event: StorageEventHook | None
    shadow: bool
    exempt_when: ExemptFunc | None
    enabled: bool
    global_limits: LimitsSpec | None
    local_denials: bool
