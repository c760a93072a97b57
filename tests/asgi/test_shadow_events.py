"""Shadow mode, the event hook and the Prometheus metrics, through real requests."""

from __future__ import annotations

from typing import Any

import httpx
import prometheus_client
import pytest

from ratelimit_mw import RateLimitMiddleware, Rule, WSGIRateLimitMiddleware
from ratelimit_mw.events import RateLimitEvent
from ratelimit_mw.metrics import PrometheusMetrics
from tests.apps import flask_app, starlette_app
from tests.helpers import closed_port_url


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 1)),
                             base_url="http://testserver")


async def test_shadow_never_blocks_but_reports(storage_url: str) -> None:
    events: list[RateLimitEvent] = []
    app = RateLimitMiddleware(starlette_app, storage=storage_url, shadow=True,
                              rules=[Rule("/login", "2/minute")], on_event=events.append)
    async with client(app) as c:
        responses = [await c.post("/login") for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["1", "0", "0", "0"]
    assert all("retry-after" not in r.headers for r in responses)
    assert [(e.kind, e.shadow) for e in events] == [
        ("allowed", False), ("allowed", False), ("limited", True), ("limited", True)]
    await app.limiter.aclose()


async def test_shadow_per_rule_overrides_global(storage_url: str) -> None:
    app = RateLimitMiddleware(starlette_app, storage=storage_url, shadow=True, rules=[
        Rule("/login", "1/minute", shadow=False), Rule("/items/{id}", "1/minute")])
    async with client(app) as c:
        login = [(await c.post("/login")).status_code for _ in range(2)]
        items = [(await c.get("/items/1")).status_code for _ in range(2)]
    assert login == [200, 429]  # enforced: the rule opted out of shadow mode
    assert items == [200, 200]  # shadow: counted, never refused
    await app.limiter.aclose()


def test_wsgi_shadow_and_events() -> None:
    events: list[RateLimitEvent] = []
    app = flask_app()
    app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, storage="memory://", rules=[Rule("/login", "1/minute", shadow=True)],
        on_event=events.append)
    with httpx.Client(transport=httpx.WSGITransport(app=app),
                      base_url="http://testserver") as c:
        codes = [c.post("/login").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    assert [e.kind for e in events] == ["allowed", "limited", "limited"]
    assert all(e.storage_seconds is not None and e.storage_seconds >= 0 for e in events)


async def test_events_on_outage_once_and_fallback_flagged() -> None:
    events: list[RateLimitEvent] = []
    app = RateLimitMiddleware(starlette_app, storage=closed_port_url(),
                              rules=[Rule("/login", "2/minute")], on_event=events.append)
    async with client(app) as c:
        codes = [(await c.post("/login")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # the memory fallback keeps the rule
    kinds = [e.kind for e in events]
    assert kinds.count("storage_down") == 1
    decisions = [e for e in events if e.kind in ("allowed", "limited")]
    assert [e.kind for e in decisions] == ["allowed", "allowed", "limited"]
    assert all(e.fallback for e in decisions)
    assert decisions[0].error is not None  # the first request met the failure itself
    assert all(e.error is None for e in decisions[1:])  # then the breaker skipped Redis
    await app.limiter.aclose()


async def test_a_broken_hook_never_fails_a_request() -> None:
    def hook(event: RateLimitEvent) -> None:
        raise RuntimeError("metrics backend down")

    app = RateLimitMiddleware(starlette_app, storage="memory://", default_limits="1/minute",
                              on_event=hook)
    async with client(app) as c:
        assert [(await c.get("/search")).status_code for _ in range(2)] == [200, 429]
    await app.limiter.aclose()


def sample(registry: prometheus_client.CollectorRegistry, name: str,
           labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def test_prometheus_metrics_after_real_requests() -> None:
    registry = prometheus_client.CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    app = RateLimitMiddleware(starlette_app, storage="memory://", on_event=metrics, rules=[
        Rule("/login", "2/minute"), Rule("/items/{id}", "1/minute", shadow=True)])
    async with client(app) as c:
        for _ in range(3):
            await c.post("/login")
        for _ in range(2):
            await c.get("/items/1")
    text = prometheus_client.generate_latest(registry).decode()
    assert 'ratelimit_requests_total{result="allowed",rule="/login"} 2.0' in text
    assert 'ratelimit_requests_total{result="limited",rule="/login"} 1.0' in text
    assert 'ratelimit_requests_total{result="shadow_limited",rule="/items/{id}"} 1.0' in text
    assert sample(registry, "ratelimit_decision_seconds_count") == 5
    assert sample(registry, "ratelimit_storage_up") == 1
    await app.limiter.aclose()


async def test_prometheus_counts_outage_and_fallback() -> None:
    registry = prometheus_client.CollectorRegistry()
    app = RateLimitMiddleware(starlette_app, storage=closed_port_url(),
                              on_event=PrometheusMetrics(registry=registry),
                              default_limits="10/minute")
    async with client(app) as c:
        for _ in range(3):
            await c.get("/search")
    assert sample(registry, "ratelimit_storage_outages_total") == 1
    assert sample(registry, "ratelimit_storage_up") == 0
    assert sample(registry, "ratelimit_storage_errors_total") == 1
    assert sample(registry, "ratelimit_fallback_decisions_total", {"rule": "default"}) == 3
    await app.limiter.aclose()


def test_on_event_must_be_callable() -> None:
    from ratelimit_mw import ConfigurationError

    with pytest.raises(ConfigurationError, match="on_event"):
        RateLimitMiddleware(starlette_app, storage="memory://", on_event="log")  # type: ignore[arg-type]
