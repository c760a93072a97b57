"""A circuit breaker for the rate-limit storage. No I/O: the limiters ask it, then report.

While the storage is down, paying its socket timeout on every request would turn an
outage into a slow API. After a failure the breaker opens: requests skip the storage and
go straight to the ``on_storage_error`` policy. After a back-off one request is let
through as a probe; if it succeeds the breaker closes, if not it opens again with a
longer back-off (doubling, capped). One event per outage and one per recovery, however
many requests fail in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .events import StorageEvent, StorageEventHook

__all__ = ["CircuitBreaker"]

logger = logging.getLogger("ratelimit_mw.breaker")


class CircuitBreaker:
    """Decides whether the next request may use the storage.

    Example::

        breaker = CircuitBreaker(backoff=0.5, max_backoff=10)
        if breaker.allow():
            try:
                ...  # the storage call
            except StorageError as error:
                breaker.failure(error)
            else:
                breaker.success()

    *backoff* is the first wait before a probe, doubled after each failed probe up to
    *max_backoff*. While a probe is out (its answer not yet known), other requests do not
    use the storage either: only one request pays a timeout at a time.
    """

    __slots__ = ("_backoff", "_clock", "_current", "_lock", "_max_backoff", "_on_event",
                 "_open_until", "_probing", "name")

    def __init__(
        self,
        *,
        backoff: float = 0.5,
        max_backoff: float = 15.0,
        on_event: StorageEventHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "storage",
    ) -> None:
        if backoff <= 0 or max_backoff < backoff:
            raise ValueError("CircuitBreaker: need 0 < backoff <= max_backoff")
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._current = backoff
        self._clock = clock
        self._on_event = on_event
        self._open_until: float | None = None  # None: closed, storage in use
        self._probing = False
        self._lock = threading.Lock()
        self.name = name

    @property
    def is_open(self) -> bool:
        """``True`` while the storage is considered down."""
        return self._open_until is not None

    def allow(self) -> bool:
        """May this request use the storage? (Closed: yes. Open: only a due probe.)"""
        until = self._open_until
        if until is None:
            return True
        with self._lock:  # threaded WSGI: exactly one probe at a time
            if self._probing or self._clock() < until:
                return False
            self._probing = True  # this request is the probe
            return True

    def abandoned(self) -> None:
        """The request given `allow` ended without an answer (cancelled, or an
        error that says nothing about the storage): let another request probe."""
        self._probing = False

    def success(self) -> None:
        """The storage answered."""
        if self._open_until is None:
            return
        self._open_until = None
        self._probing = False
        self._current = self._backoff
        logger.warning("%s is answering again; using it again", self.name)
        self._emit("storage_up", None)

    def failure(self, error: BaseException) -> None:
        """The storage failed (refused, timed out, ...)."""
        now = self._clock()
        if self._open_until is None:
            self._open_until = now + self._current
            logger.warning("%s failed (%s); skipping it for %.1fs, then probing",
                           self.name, error, self._current)
            self._emit("storage_down", error)
            return
        if not self._probing:
            return  # a request already under way when the outage began: counted once
        # The probe failed: back off further.
        self._probing = False
        self._current = min(self._current * 2, self._max_backoff)
        self._open_until = now + self._current

    def _emit(self, event: StorageEvent, error: BaseException | None) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event, error)
        except Exception:  # a broken hook must not break rate limiting
            logger.exception("on_storage_event hook failed for %s", event)
