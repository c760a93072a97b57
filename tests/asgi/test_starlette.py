"""The ASGI middleware in front of a real Starlette app, through httpx, memory and Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import http_sf
import httpx

from ratelimit_mw import RateLimitMiddleware, RedisOptions, Rule, keys
from tests.apps import starlette_app
from tests.helpers import closed_port_url


def build(storage: str, **options: Any) -> RateLimitMiddleware:
    options.setdefault("default_limits", "100/minute")
    options.setdefault("rules", [
        Rule("/login", "5/minute", methods=["POST"]),
        Rule("/items/{id}", "10/minute"),
        Rule("/health", exempt=True),
    ])
    return RateLimitMiddleware(starlette_app, storage=storage, **options)


def client(app: Any, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_sixth_login_is_429_with_retry_after(storage_url: str, strategy: str) -> None:
    app = build(storage_url, strategy=strategy)
    async with client(app) as c:
        responses = [await c.post("/login") for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    last = responses[-1]
    # A sliding-window counter can need more than one window: the previous window's
    # count still weighs on the next one (here 5 hits at once: 60 s, then 1 ms).
    longest = 120 if strategy == "sliding-window-counter" else 60
    assert 1 <= int(last.headers["retry-after"]) <= longest
    assert last.headers["content-type"] == "application/problem+json"
    assert last.json()["violated-policies"] == ["/login"]
    assert "retry-after" not in responses[0].headers  # 429 only
    assert [r.headers["x-ratelimit-remaining"] for r in responses[:5]] == ["4", "3", "2", "1",
                                                                            "0"]
    await app.limiter.aclose()


async def test_path_variants_share_the_login_counter(storage_url: str) -> None:
    app = build(storage_url)
    variants = ("/login", "/login/", "//login", "/login//", "/log%69n")
    async with client(app) as c:
        # Full URLs, so that httpx sends each path as written ('//login' alone would be
        # read as a network-path reference).
        remaining = [(await c.post(f"http://testserver{path}")).headers.get(
            "x-ratelimit-remaining") for path in variants]
        assert remaining == ["4", "3", "2", "1", "0"]
        assert (await c.post("/login")).status_code == 429
    await app.limiter.aclose()


async def test_items_share_the_template_counter(storage_url: str) -> None:
    app = build(storage_url)
    async with client(app) as c:
        codes = [(await c.get(f"/items/{i}")).status_code for i in range(11)]
    assert codes == [200] * 10 + [429]
    await app.limiter.aclose()


async def test_clients_are_counted_apart(storage_url: str) -> None:
    app = build(storage_url, rules=[Rule("/login", "1/minute")])
    async with client(app, "203.0.113.7") as a, client(app, "203.0.113.8") as b:
        assert (await a.post("/login")).status_code == 200
        assert (await b.post("/login")).status_code == 200
        assert (await a.post("/login")).status_code == 429
    await app.limiter.aclose()


async def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(storage_url: str) -> None:
    app = build(storage_url, rules=[Rule("/login", "2/minute")],
                key=keys.client_ip(trusted_proxies=["10.0.0.0/8"]))
    async with client(app, "203.0.113.7") as c:
        codes = [(await c.post("/login", headers={"X-Forwarded-For": f"198.51.100.{i}",
                                                   "Forwarded": f"for=198.51.100.{i}",
                                                   "X-Real-IP": f"198.51.100.{i}"})
                  ).status_code for i in range(3)]
    assert codes == [200, 200, 429]
    await app.limiter.aclose()


async def test_forwarded_for_trusted_from_configured_proxy(storage_url: str) -> None:
    app = build(storage_url, rules=[Rule("/login", "1/minute")],
                key=keys.client_ip(trusted_proxies=["10.0.0.0/8"]))
    async with client(app, "10.1.2.3") as proxy:
        first = await proxy.post("/login", headers={"X-Forwarded-For": "198.51.100.1"})
        other = await proxy.post("/login", headers={"X-Forwarded-For": "198.51.100.2"})
        again = await proxy.post("/login",
                                 headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.1"})
    assert (first.status_code, other.status_code, again.status_code) == (200, 200, 429)
    await app.limiter.aclose()


async def test_draft_headers_parse_as_structured_fields(storage_url: str) -> None:
    app = build(storage_url, rules=[Rule("/search", "10/second;1000/hour", name="search")])
    async with client(app) as c:
        response = await c.get("/search")
    policy = http_sf.parse(response.headers["ratelimit-policy"].encode(), tltype="list")
    current = http_sf.parse(response.headers["ratelimit"].encode(), tltype="list")
    assert [(name, params["q"], params["w"]) for name, params in policy] == [
        ("search-1s", 10, 1), ("search-3600s", 1000, 3600)]
    assert [(name, params["r"]) for name, params in current] == [("search-1s", 9),
                                                                  ("search-3600s", 999)]
    assert all(0 <= params["t"] <= 3600 for _, params in current)  # delay, never an epoch
    assert response.headers["x-ratelimit-limit"] == "10"
    await app.limiter.aclose()


async def test_header_modes(storage_url: str) -> None:
    for mode, present, absent in (("draft", "ratelimit", "x-ratelimit-limit"),
                                  ("legacy", "x-ratelimit-limit", "ratelimit"),
                                  ("none", None, "ratelimit")):
        app = build(storage_url, headers=mode)
        async with client(app) as c:
            response = await c.get("/items/1")
        if present:
            assert present in response.headers
        assert absent not in response.headers
        assert "x-ratelimit-remaining" not in response.headers or mode == "legacy"
        await app.limiter.aclose()


async def test_streaming_body_intact(storage_url: str) -> None:
    app = build(storage_url)
    async with client(app) as c, c.stream("GET", "/stream") as response:
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert body == b"".join(f"chunk{i}\n".encode() for i in range(5))
    assert response.headers["ratelimit-policy"] == '"default";q=100;w=60'
    await app.limiter.aclose()


async def test_decision_reaches_the_handler(storage_url: str) -> None:
    app = build(storage_url)
    async with client(app) as c:
        data = (await c.get("/decision")).json()
    assert data == {"allowed": True, "rule": "default", "remaining": [99]}
    await app.limiter.aclose()


async def test_exempt_route_never_limited(storage_url: str) -> None:
    app = build(storage_url, default_limits="1/minute")
    async with client(app) as c:
        responses = [await c.get("/health") for _ in range(5)]
    assert {r.status_code for r in responses} == {200}
    assert not any("ratelimit" in r.headers for r in responses)
    await app.limiter.aclose()


async def test_200_concurrent_requests_admit_exactly_100_on_redis(redis_url: str,
                                                                   redis_client: Any,
                                                                   strategy: str) -> None:
    # Generous timeouts and "deny": on a loaded machine a slow connect must not fall back
    # to memory (which admits its own 100); a storage failure shows as a 503 by name.
    app = build(redis_url, strategy=strategy, default_limits="100/minute", rules=[],
                on_storage_error="deny",
                redis_options=RedisOptions(socket_timeout=10, socket_connect_timeout=10))
    async with client(app) as c:
        responses = await asyncio.gather(*(c.get("/search") for _ in range(200)),
                                         return_exceptions=True)
    errors = [r for r in responses if isinstance(r, BaseException)]
    assert errors == []
    codes = [r.status_code for r in responses if isinstance(r, httpx.Response)]
    assert codes.count(200) == 100
    assert codes.count(429) == 100
    await app.limiter.aclose()


async def test_storage_down_fail_open_never_500() -> None:
    app = build(closed_port_url(), on_storage_error="allow")
    async with client(app) as c:
        responses = [await c.post("/login") for _ in range(8)]
    assert {r.status_code for r in responses} == {200}
    assert "ratelimit" not in responses[0].headers  # no numbers we do not know
    await app.limiter.aclose()


async def test_storage_down_fail_closed_is_503_problem() -> None:
    app = build(closed_port_url(), on_storage_error="deny")
    async with client(app) as c:
        response = await c.post("/login")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(response.content)["status"] == 503
    assert response.headers["retry-after"] == "1"
    await app.limiter.aclose()
