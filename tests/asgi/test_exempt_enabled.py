"""exempt_when= and enabled=False on the ASGI middleware, in front of a real Starlette
app through httpx, memory and Redis."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ratelimit_mw import RateLimitMiddleware, Rule, keys
from ratelimit_mw._types import Message
from ratelimit_mw.errors import ConfigurationError
from tests.apps import starlette_app
from tests.helpers import WatchedPort, internal, untouched


def client(app: Any, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_middleware_exempt_when_skips_every_route(storage_url: str) -> None:
    app = RateLimitMiddleware(starlette_app, storage=storage_url, default_limits="2/minute",
                              rules=[Rule("/state", "2/minute")], exempt_when=internal)
    async with client(app) as c:
        exempt = [await c.get(path, headers={"X-Internal": "yes"})
                  for path in ("/state", "/state", "/state", "/state?x=1")]
        counted = await c.get("/state")
    assert all(untouched(r) for r in exempt)
    # Same client: the exempt requests consumed nothing of its quota.
    assert counted.json() == {"decision": True}
    assert counted.headers["x-ratelimit-remaining"] == "1"
    await app.limiter.aclose()  # type: ignore[union-attr]


async def test_rule_exempt_when_applies_to_its_own_requests(storage_url: str) -> None:
    app = RateLimitMiddleware(starlette_app, storage=storage_url, default_limits="5/minute",
                              rules=[Rule("/state", "1/minute", exempt_when=internal)])
    async with client(app) as c:
        exempt = [await c.get("/state", headers={"X-Internal": "yes"}) for _ in range(3)]
        other = await c.get("/search", headers={"X-Internal": "yes"})  # another rule
        limited = [await c.get("/state") for _ in range(2)]
    assert all(untouched(r) for r in exempt)
    assert other.headers["x-ratelimit-remaining"] == "4"
    assert [r.status_code for r in limited] == [200, 429]
    await app.limiter.aclose()  # type: ignore[union-attr]


async def test_network_allow_list_respects_proxy_trust(storage_url: str) -> None:
    trust: dict[str, Any] = {"trusted_proxies": ["192.0.2.0/24"]}
    app = RateLimitMiddleware(starlette_app, storage=storage_url, default_limits="1/minute",
                              key=keys.client_ip(**trust),
                              exempt_when=keys.client_in(["10.0.0.0/8"], **trust))
    forged = {"X-Forwarded-For": "10.0.0.1"}
    async with client(app, "203.0.113.7") as untrusted, client(app, "192.0.2.10") as proxy:
        spoofed = [await untrusted.get("/state", headers=forged) for _ in range(2)]
        relayed = [await proxy.get("/state", headers=forged) for _ in range(3)]
        outsider = [await proxy.get("/state", headers={"X-Forwarded-For": "198.51.100.1"})
                    for _ in range(2)]
    assert [r.status_code for r in spoofed] == [200, 429]  # counted as 203.0.113.7
    assert all(untouched(r) for r in relayed)
    assert [r.status_code for r in outsider] == [200, 429]
    await app.limiter.aclose()  # type: ignore[union-attr]


async def test_exempt_when_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="exempt_when='internal'"):
        RateLimitMiddleware(starlette_app, storage="memory://",
                            exempt_when="internal")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"Rule\('/a'\): exempt_when=1"):
        Rule("/a", "1/minute", exempt_when=1)  # type: ignore[arg-type]


async def test_disabled_passes_through_and_contacts_no_storage() -> None:
    port = WatchedPort()
    app = RateLimitMiddleware(starlette_app, storage=port.url, default_limits="1/minute",
                              enabled=False)
    assert app.limiter is None  # not even built
    async with client(app) as c:
        responses = [await c.get("/state") for _ in range(3)]
    assert all(untouched(r) for r in responses)
    sent: list[str] = []
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert port.connections() == 0
    port.close()


async def test_disabled_still_checks_its_options() -> None:
    with pytest.raises(ConfigurationError, match="strategy='fastest'"):
        RateLimitMiddleware(starlette_app, enabled=False,
                            strategy="fastest")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="enabled='no'"):
        RateLimitMiddleware(starlette_app, enabled="no")  # type: ignore[arg-type]
