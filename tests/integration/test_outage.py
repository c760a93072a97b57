"""Storage outages in-process: each on_storage_error policy, the breaker, recovery.

Real Redis processes are killed, paused (SIGSTOP) and restarted on their port. The
same scenarios under real servers with several workers are in test_outage_servers.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from ratelimit_mw import (
    AsyncRateLimiter,
    RateLimiter,
    RateLimitMiddleware,
    Rule,
    StorageError,
    StorageUnavailableError,
    WSGIRateLimitMiddleware,
)
from tests.apps import flask_app, starlette_app
from tests.redis_server import PrivateRedis


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    redis_server = PrivateRedis()
    yield redis_server
    redis_server.stop()


def keys_in(server: PrivateRedis) -> list[bytes]:
    client = redis.Redis(port=server.port)
    try:
        return list(client.keys("*"))
    finally:
        client.close()


def asgi(server: PrivateRedis, policy: str, events: list[Any] | None = None,
         **options: Any) -> RateLimitMiddleware:
    return RateLimitMiddleware(
        starlette_app, storage=server.url, on_storage_error=policy,  # type: ignore[arg-type]
        default_limits="100/minute", rules=[Rule("/login", "3/minute"),
                                            Rule("/health", exempt=True)],
        on_storage_event=(lambda e, err: events.append(e)) if events is not None else None,
        **options,
    )


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 1)),
                             base_url="http://testserver")


@pytest.mark.parametrize(("policy", "expected"), [
    ("allow", [200] * 5),
    ("deny", [503] * 5),
    ("memory", [200, 200, 200, 429, 429]),
])
async def test_policy_while_redis_is_down(server: PrivateRedis, policy: str,
                                          expected: list[int]) -> None:
    events: list[str] = []
    app = asgi(server, policy, events)
    server.kill()
    async with client(app) as c:
        started = time.monotonic()
        codes = [(await c.post("/login")).status_code for _ in range(5)]
        elapsed = time.monotonic() - started
    assert codes == expected
    assert 500 not in codes
    assert events == ["storage_down"]  # one event for the outage, not one per request
    assert elapsed < 2  # refused connections are fast, then the breaker skips Redis
    await app.limiter.aclose()


async def test_memory_fallback_keeps_headers_and_decision(server: PrivateRedis) -> None:
    app = asgi(server, "memory")
    server.kill()
    async with client(app) as c:
        response = await c.post("/login")
    assert response.headers["ratelimit-policy"] == '"/login";q=3;w=60'
    assert response.headers["x-ratelimit-remaining"] == "2"
    await app.limiter.aclose()


async def test_breaker_skips_redis_then_recovers(server: PrivateRedis) -> None:
    events: list[str] = []
    app = asgi(server, "memory", events)
    async with client(app) as c:
        assert (await c.get("/items/1")).status_code == 200
        server.kill()
        for _ in range(5):
            assert (await c.get("/items/1")).status_code == 200
        assert app.limiter.breaker.is_open
        with pytest.raises(StorageUnavailableError):
            await app.limiter.acheck(app.policy.plan(_info("/items/1")))  # type: ignore[arg-type]
        server.start()
        restarted = time.monotonic()
        # Redis is used again as soon as a probe gets through: keys reappear.
        while not keys_in(server):
            assert time.monotonic() - restarted < 5, "Redis not used again within 5 s"
            await c.get("/items/1")
            await asyncio.sleep(0.05)
    assert events == ["storage_down", "storage_up"]
    assert not app.limiter.breaker.is_open
    await app.limiter.aclose()


def _info(path: str) -> Any:
    from ratelimit_mw._request import RequestInfo

    return RequestInfo("GET", path, client="203.0.113.7")


async def test_paused_redis_costs_one_timeout_then_nothing(server: PrivateRedis) -> None:
    app = asgi(server, "memory")
    async with client(app) as c:
        assert (await c.get("/items/1")).status_code == 200  # connected
        server.pause()
        try:
            timings = []
            for _ in range(6):
                started = time.monotonic()
                response = await c.get("/items/1")
                timings.append(time.monotonic() - started)
                assert response.status_code == 200
        finally:
            server.resume()
    assert timings[0] < 1.0  # the socket timeout (0.25 s), not redis-py's 5 s
    assert max(timings[1:]) < 0.1  # the breaker is open: no more waiting
    await app.limiter.aclose()


def test_wsgi_policies_while_redis_is_down(server: PrivateRedis) -> None:
    server.kill()
    for policy, expected in (("allow", 200), ("deny", 503), ("memory", 200)):
        app = flask_app()
        app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, storage=server.url, on_storage_error=policy,  # type: ignore[arg-type]
            rules=[Rule("/login", "1/minute")])
        with httpx.Client(transport=httpx.WSGITransport(app=app),
                          base_url="http://testserver") as c:
            codes = [c.post("/login").status_code for _ in range(2)]
        assert codes[0] == expected
        assert codes[1] == (429 if policy == "memory" else expected)


def test_sync_limiter_recovers(server: PrivateRedis) -> None:
    limiter = RateLimiter(server.url)
    assert limiter.hit("10/minute", "job").allowed
    server.kill()
    with pytest.raises(StorageError, match=r"127\.0\.0\.1"):
        limiter.hit("10/minute", "job")
    server.start()
    deadline = time.monotonic() + 5
    while True:
        try:
            quota = limiter.hit("10/minute", "job")
            break
        except StorageUnavailableError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert quota.remaining == 9  # a fresh Redis: the old counter is gone
    limiter.close()


async def test_default_policy_is_memory() -> None:
    app = RateLimitMiddleware(starlette_app, storage="memory://")
    assert app.on_storage_error == "memory"
    await app.limiter.aclose()


async def test_async_limiter_pool_shared_by_middlewares(server: PrivateRedis) -> None:
    limiter = AsyncRateLimiter(server.url)
    first = RateLimitMiddleware(starlette_app, limiter=limiter, default_limits="2/minute")
    second = RateLimitMiddleware(starlette_app, limiter=limiter, default_limits="2/minute")
    async with client(first) as a, client(second) as b:
        codes = [(await a.get("/items/1")).status_code, (await b.get("/items/1")).status_code,
                 (await a.get("/items/1")).status_code]
    assert codes == [200, 200, 429]  # one storage, one counter
    await limiter.aclose()


async def test_cancelled_probe_does_not_wedge_the_breaker(server: PrivateRedis) -> None:
    limiter = AsyncRateLimiter(server.url)
    plan = _plan_x()
    await limiter.acheck(plan)
    server.pause()
    try:
        with pytest.raises(StorageError):
            await limiter.acheck(plan)  # times out: the breaker opens
        await asyncio.sleep(0.6)        # past the first back-off: the next call probes
        probe = asyncio.ensure_future(limiter.acheck(plan))
        await asyncio.sleep(0.05)
        probe.cancel()                  # the client went away mid-probe
        with pytest.raises(asyncio.CancelledError):
            await probe
    finally:
        server.resume()
    deadline = time.monotonic() + 5
    while True:  # a new probe is allowed, succeeds, and closes the breaker
        try:
            await limiter.acheck(plan)
            break
        except StorageUnavailableError:
            assert time.monotonic() < deadline, "the breaker stayed open"
            await asyncio.sleep(0.05)
    assert not limiter.breaker.is_open
    await limiter.aclose()


def _plan_x() -> Any:
    from ratelimit_mw._core import Policy

    return Policy(default_limits="100/minute").plan(_info("/x"))


async def test_a_failing_storage_hook_does_not_hide_the_outage_from_on_event(
        server: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def broken(event: str, error: BaseException | None) -> None:
        raise RuntimeError("storage hook bug")

    app = RateLimitMiddleware(starlette_app, storage=server.url, default_limits="100/minute",
                              on_storage_event=broken,
                              on_event=lambda event: seen.append(event.kind))
    server.kill()
    async with client(app) as c:
        assert (await c.post("/login")).status_code == 200  # the memory fallback answers
    assert "storage_down" in seen
    assert "storage hook bug" in caplog.text  # logged, not swallowed
