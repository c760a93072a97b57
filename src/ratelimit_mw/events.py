"""What the middleware reports: one event per decided request, one per storage outage and
recovery. One hook receives them all, `EventHook`; metrics are built on it (``metrics.py``).

The limiters' circuit breaker speaks a narrower callback, `StorageEventHook`
``(kind, error)``; `storage_listener` feeds an `EventHook` from it, so an ``on_event`` given
to a middleware or a limiter hears of outages too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, NamedTuple

__all__ = ["EventHook", "EventKind", "RateLimitEvent", "StorageEvent", "StorageEventHook",
           "safe_emit", "storage_listener"]

logger = logging.getLogger("ratelimit_mw.events")

EventKind = Literal["allowed", "limited", "storage_down", "storage_up"]
StorageEvent = Literal["storage_down", "storage_up"]


class RateLimitEvent(NamedTuple):
    """One thing that happened, for logs and metrics.

    ``allowed`` / ``limited`` come once per checked request: ``rule`` is the plan's rule
    (``"default"`` for the default limits), ``shadow`` is true when shadow mode let a
    refused request through, ``fallback`` when ``on_storage_error`` decided because the
    storage could not, ``error`` the storage error if there was one (``None`` when the
    circuit breaker skipped the storage), ``local`` when this process repeated a refusal
    the storage made earlier without asking it, ``storage_seconds`` the time the decision
    took.
    ``storage_down`` / ``storage_up`` come once per outage and recovery.

    Example::

        def on_event(event: RateLimitEvent) -> None:
            if event.kind == "limited":
                print(f"{event.rule}: refused{' (shadow)' if event.shadow else ''}")
    """

    kind: EventKind
    rule: str | None = None
    shadow: bool = False
    fallback: bool = False
    storage_seconds: float | None = None
    error: BaseException | None = None
    local: bool = False


#: The hook: receives every `RateLimitEvent`.
EventHook = Callable[[RateLimitEvent], None]
#: The circuit breaker's callback: once when an outage starts (with the error) and once
#: when it ends (``None``).
StorageEventHook = Callable[[StorageEvent, "BaseException | None"], None]


def safe_emit(hook: EventHook, event: RateLimitEvent) -> None:
    """Call *hook*; a broken hook is logged, never allowed to fail the request."""
    try:
        hook(event)
    except Exception:
        logger.exception("on_event hook failed for a %s event", event.kind)


def storage_listener(on_event: EventHook | None,
                     on_storage_event: StorageEventHook | None) -> StorageEventHook | None:
    """The one breaker callback that feeds *on_storage_event* and *on_event* alike."""
    if on_event is None:
        return on_storage_event

    def both(event: StorageEvent, error: BaseException | None) -> None:
        try:
            if on_storage_event is not None:
                on_storage_event(event, error)
        finally:
            # A failing on_storage_event is the breaker's to log; on_event (and the
            # metrics on it) still hears of the outage.
            safe_emit(on_event, RateLimitEvent(event, error=error))

    return both
