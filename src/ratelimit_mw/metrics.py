"""Prometheus metrics, as an ``on_event`` hook. Needs the ``prometheus`` extra.

Example::

    from ratelimit_mw.metrics import PrometheusMetrics

    metrics = PrometheusMetrics()            # registers in prometheus_client's REGISTRY
    app = RateLimitMiddleware(app, default_limits="100/minute", on_event=metrics)

Metrics (``namespace`` defaults to ``ratelimit``):

- ``ratelimit_requests_total{rule, result}``: result ``allowed``, ``limited`` or
  ``shadow_limited`` (refused, let through by shadow mode).
- ``ratelimit_fallback_decisions_total{rule}``: decided by ``on_storage_error`` because
  the storage could not (failed or skipped by the circuit breaker).
- ``ratelimit_local_decisions_total{rule}``: refusals repeated by this process without a
  storage call (``local_denials``); they count in ``requests_total`` too.
- ``ratelimit_storage_errors_total``: storage calls that failed.
- ``ratelimit_storage_outages_total`` and the gauge ``ratelimit_storage_up``.
- ``ratelimit_decision_seconds``: histogram of the time a decision took (the storage
  round trip, or the memory lookup).

Rule labels are rule names from your configuration, so their number is bounded.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigurationError
from .events import RateLimitEvent

__all__ = ["PrometheusMetrics"]

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            0.5, 1.0)


class PrometheusMetrics:
    """Counts events into Prometheus metrics; pass it as ``on_event``.

    Example::

        registry = prometheus_client.CollectorRegistry()
        metrics = PrometheusMetrics(registry=registry)
        app = RateLimitMiddleware(app, default_limits="100/minute", on_event=metrics)
    """

    def __init__(self, registry: Any = None, namespace: str = "ratelimit") -> None:
        try:
            import prometheus_client as prom
        except ImportError:  # pragma: no cover - exercised only without the extra
            raise ConfigurationError(
                "PrometheusMetrics needs prometheus-client: pip install 'ratelimit-mw[prometheus]'"
            ) from None
        registry = prom.REGISTRY if registry is None else registry
        self.requests = prom.Counter(f"{namespace}_requests", "Rate-limit decisions",
                                     ["rule", "result"], registry=registry)
        self.fallback = prom.Counter(f"{namespace}_fallback_decisions",
                                     "Decisions made by on_storage_error", ["rule"],
                                     registry=registry)
        self.local = prom.Counter(f"{namespace}_local_decisions",
                                  "Refusals repeated without a storage call", ["rule"],
                                  registry=registry)
        self.storage_errors = prom.Counter(f"{namespace}_storage_errors",
                                           "Failed storage calls", registry=registry)
        self.outages = prom.Counter(f"{namespace}_storage_outages", "Storage outages",
                                    registry=registry)
        self.storage_up = prom.Gauge(f"{namespace}_storage_up",
                                     "1 while the storage answers, 0 during an outage",
                                     registry=registry)
        self.storage_up.set(1)
        self.decision_seconds = prom.Histogram(f"{namespace}_decision_seconds",
                                               "Time to decide a request", buckets=_BUCKETS,
                                               registry=registry)

    def __call__(self, event: RateLimitEvent) -> None:
        kind = event.kind
        if kind == "storage_down":
            self.outages.inc()
            self.storage_up.set(0)
            return
        if kind == "storage_up":
            self.storage_up.set(1)
            return
        rule = event.rule or ""
        result = "allowed" if kind == "allowed" else (
            "shadow_limited" if event.shadow else "limited")
        self.requests.labels(rule, result).inc()
        if event.fallback:
            self.fallback.labels(rule).inc()
        if event.local:
            self.local.labels(rule).inc()
        if event.error is not None:
            self.storage_errors.inc()
        if event.storage_seconds is not None:
            self.decision_seconds.observe(event.storage_seconds)
