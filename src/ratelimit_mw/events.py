"""What the middleware reports about each decision: one event per request, plus the
storage outages. Plain callables receive them; metrics are built on top (``metrics.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, NamedTuple

__all__ = ["EventHook", "EventKind", "RateLimitEvent", "safe_emit"]

logger = logging.getLogger("ratelimit_mw.events")

EventKind = Literal["allowed", "limited", "storage_down", "storage_up"]


class RateLimitEvent(NamedTuple):
    """One thing that happened, for logs and metrics.

    ``allowed`` / ``limited`` come once per checked request: ``rule`` is the plan's rule
    (``"default"`` for the default limits), ``shadow`` is true when shadow mode let a
    refused request through, ``fallback`` when ``on_storage_error`` decided because the
    storage could not, ``error`` the storage error if there was one (``None`` when the
    circuit breaker skipped the storage), ``storage_seconds`` the time the decision took.
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


EventHook = Callable[[RateLimitEvent], None]


def safe_emit(hook: EventHook, event: RateLimitEvent) -> None:
    """Call *hook*; a broken hook is logged, never allowed to fail the request."""
    try:
        hook(event)
    except Exception:
        logger.exception("on_event hook failed for a %s event", event.kind)
