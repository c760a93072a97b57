"""The package's errors: one base class, configuration mistakes, storage failures."""

from __future__ import annotations


class RateLimitMWError(Exception):
    """Base class of every error this package raises."""


class ConfigurationError(RateLimitMWError, ValueError):
    """A setting is wrong; raised at construction with a message that says what to change."""


class StorageError(RateLimitMWError):
    """The rate-limit storage failed (refused, timed out, reset, ...).

    Every storage failure reaches the middleware as this one type, so that one
    policy (``on_storage_error``) decides what the client sees.
    """


class StorageUnavailableError(StorageError):
    """The storage is skipped while its circuit breaker is open (it failed recently).

    Raised without touching the network, so an outage costs no socket timeouts.
    """
