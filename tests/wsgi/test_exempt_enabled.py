"""exempt_when= and enabled=False on the WSGI middleware, in front of a real Flask app
through httpx, memory and Redis."""

from __future__ import annotations

from typing import Any

import httpx

from ratelimit_mw import Rule, WSGIRateLimitMiddleware, keys
from tests.apps import flask_app
from tests.helpers import WatchedPort, internal, untouched


def client(app: Any, peer: str = "203.0.113.7") -> httpx.Client:
    transport = httpx.WSGITransport(app=app, remote_addr=peer)
    return httpx.Client(transport=transport, base_url="http://testserver")


def wrap(**options: Any) -> WSGIRateLimitMiddleware:
    app = flask_app()
    middleware = WSGIRateLimitMiddleware(app.wsgi_app, **options)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    return middleware


def test_middleware_exempt_when_skips_every_route(storage_url: str) -> None:
    middleware = wrap(storage=storage_url, default_limits="2/minute", exempt_when=internal)
    with client(middleware) as c:
        exempt = [c.get("/state", headers={"X-Internal": "yes"}) for _ in range(4)]
        counted = c.get("/state")
    assert all(untouched(r) for r in exempt)
    assert counted.json() == {"decision": True}
    assert counted.headers["x-ratelimit-remaining"] == "1"


def test_rule_exempt_when_applies_to_its_own_requests(storage_url: str) -> None:
    middleware = wrap(storage=storage_url, default_limits="5/minute",
                      rules=[Rule("/state", "1/minute", exempt_when=internal)])
    with client(middleware) as c:
        exempt = [c.get("/state", headers={"X-Internal": "yes"}) for _ in range(3)]
        other = c.get("/whoami", headers={"X-Internal": "yes"})  # the defaults
        limited = [c.get("/state") for _ in range(2)]
    assert all(untouched(r) for r in exempt)
    assert other.json() == {"rule": "default", "remaining": 4}
    assert [r.status_code for r in limited] == [200, 429]


def test_network_allow_list_respects_proxy_trust(storage_url: str) -> None:
    trust: dict[str, Any] = {"trusted_proxies": ["192.0.2.0/24"]}
    middleware = wrap(storage=storage_url, default_limits="1/minute",
                      key=keys.client_ip(**trust),
                      exempt_when=keys.client_in(["10.0.0.0/8"], **trust))
    forged = {"X-Forwarded-For": "10.0.0.1"}
    with client(middleware, "203.0.113.7") as untrusted, \
            client(middleware, "192.0.2.10") as proxy:
        spoofed = [untrusted.get("/state", headers=forged) for _ in range(2)]
        relayed = [proxy.get("/state", headers=forged) for _ in range(3)]
    assert [r.status_code for r in spoofed] == [200, 429]
    assert all(untouched(r) for r in relayed)


def test_disabled_passes_through_and_contacts_no_storage() -> None:
    port = WatchedPort()
    middleware = wrap(storage=port.url, default_limits="1/minute", enabled=False)
    assert middleware.limiter is None  # not even built
    with client(middleware) as c:
        responses = [c.get("/state") for _ in range(3)]
    assert all(untouched(r) for r in responses)
    assert port.connections() == 0
    port.close()
