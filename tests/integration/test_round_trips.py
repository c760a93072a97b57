"""One Redis round trip per request, counted on a private server with MONITOR.

MONITOR prints every command a client sends (``[db 127.0.0.1:port]``) and, tagged
``[db lua]``, the commands a script runs. A round trip is a client command.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ratelimit_mw import (
    AsyncRateLimiter,
    Limit,
    RateLimiter,
    RateLimitMiddleware,
    Rule,
    WSGIRateLimitMiddleware,
    keys,
)
from ratelimit_mw._core import Policy
from ratelimit_mw._request import RequestInfo
from tests.apps import flask_app, starlette_app
from tests.helpers import internal
from tests.redis_monitor import Monitor, client_commands
from tests.redis_server import PrivateRedis

# Slow enough that no strategy frees room during a test: a GCRA bucket refills
# continuously (one request every window / amount), so exact counts need long windows.
LIMITS = {1: "100/minute", 3: "100/minute;1000/hour;10000/day"}


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    yield redis
    redis.stop()


def plan_for(limits: str) -> Any:
    policy = Policy(default_limits=limits, rules=[Rule("/x", limits)])
    return policy.plan(RequestInfo("GET", "/x", client="203.0.113.7"))


@pytest.mark.parametrize("count", [1, 3])
def test_sync_one_round_trip(server: PrivateRedis, strategy: str, count: int,
                             tmp_path: Path) -> None:
    limiter = RateLimiter(server.url, strategy=strategy)  # type: ignore[arg-type]
    plan = plan_for(LIMITS[count])
    limiter.check(plan)  # warm up: connect, load the script
    monitor = Monitor(server.port, tmp_path / "monitor.txt")
    decisions = [limiter.check(plan) for _ in range(10)]
    commands = client_commands(monitor.stop())
    assert commands == ["EVALSHA"] * 10
    assert all(len(d.quotas) == count for d in decisions)
    assert [d.quotas[0].remaining for d in decisions] == list(range(98, 88, -1))
    limiter.close()


@pytest.mark.parametrize("count", [1, 3])
async def test_async_one_round_trip(server: PrivateRedis, strategy: str, count: int,
                                    tmp_path: Path) -> None:
    limiter = AsyncRateLimiter(server.url, strategy=strategy)  # type: ignore[arg-type]
    plan = plan_for(LIMITS[count])
    await limiter.acheck(plan)
    monitor = Monitor(server.port, tmp_path / "monitor.txt")
    for _ in range(10):
        decision = await limiter.acheck(plan)
    commands = client_commands(monitor.stop())
    assert commands == ["EVALSHA"] * 10
    assert [q.remaining for q in decision.quotas] == [
        item.limit.amount - 11 for item in plan.items]
    await limiter.aclose()


def test_noscript_after_restart_is_reloaded(server: PrivateRedis, strategy: str) -> None:
    import redis

    limiter = RateLimiter(server.url, strategy=strategy)  # type: ignore[arg-type]
    plan = plan_for(LIMITS[1])
    limiter.check(plan)
    redis.Redis(port=server.port).script_flush()  # what a restart does to the cache
    decision = limiter.check(plan)  # NOSCRIPT -> SCRIPT LOAD -> EVALSHA, no error
    assert decision.allowed
    assert decision.quotas[0].remaining == 98
    limiter.close()


async def test_async_noscript_after_restart_is_reloaded(server: PrivateRedis) -> None:
    import redis

    limiter = AsyncRateLimiter(server.url)
    plan = plan_for(LIMITS[1])
    await limiter.acheck(plan)
    redis.Redis(port=server.port).script_flush()
    assert (await limiter.acheck(plan)).quotas[0].remaining == 98
    await limiter.aclose()


# -- requests the middleware does not limit make no round trip ----------------------------


EXEMPT = {"middleware": {"exempt_when": internal},
          "rule": {"rules": [Rule("/state", "100/minute", exempt_when=internal)]}}


@pytest.mark.parametrize("where", list(EXEMPT))
async def test_asgi_exempt_requests_send_no_command(server: PrivateRedis, where: str,
                                                    tmp_path: Path) -> None:
    app = RateLimitMiddleware(starlette_app, storage=server.url, default_limits="100/minute",
                              **EXEMPT[where])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        await client.get("/state")  # warm up: connect, load the script
        monitor = Monitor(server.port, tmp_path / "monitor.txt")
        for _ in range(5):
            await client.get("/state", headers={"X-Internal": "yes"})
        exempt = client_commands(monitor.stop())
        monitor = Monitor(server.port, tmp_path / "counted.txt")
        await client.get("/state")
        counted = client_commands(monitor.stop())
    assert exempt == []
    assert counted == ["EVALSHA"]  # the monitor sees what a counted request sends
    await app.limiter.aclose()  # type: ignore[union-attr]


@pytest.mark.parametrize("where", list(EXEMPT))
def test_wsgi_exempt_requests_send_no_command(server: PrivateRedis, where: str,
                                              tmp_path: Path) -> None:
    app = flask_app()
    middleware = WSGIRateLimitMiddleware(app.wsgi_app, storage=server.url,
                                         default_limits="100/minute", **EXEMPT[where])
    with httpx.Client(transport=httpx.WSGITransport(app=middleware),
                      base_url="http://test") as client:
        client.get("/state")
        monitor = Monitor(server.port, tmp_path / "monitor.txt")
        for _ in range(5):
            client.get("/state", headers={"X-Internal": "yes"})
        exempt = client_commands(monitor.stop())
        monitor = Monitor(server.port, tmp_path / "counted.txt")
        client.get("/state")
        counted = client_commands(monitor.stop())
    assert exempt == []
    assert counted == ["EVALSHA"]
    middleware.limiter.close()  # type: ignore[union-attr]


async def test_disabled_middlewares_never_connect(server: PrivateRedis,
                                                  tmp_path: Path) -> None:
    watcher = redis.Redis(port=server.port)
    before = watcher.info("stats")["total_connections_received"]
    monitor = Monitor(server.port, tmp_path / "monitor.txt")
    asgi = RateLimitMiddleware(starlette_app, storage=server.url,
                               default_limits="1/minute", enabled=False)
    wsgi = WSGIRateLimitMiddleware(flask_app().wsgi_app, storage=server.url,
                                   default_limits="1/minute", enabled=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://test") as client:
        asgi_codes = [(await client.get("/state")).status_code for _ in range(3)]
    with httpx.Client(transport=httpx.WSGITransport(app=wsgi),
                      base_url="http://test") as client:
        wsgi_codes = [client.get("/state").status_code for _ in range(3)]
    commands = client_commands(monitor.stop())
    after = watcher.info("stats")["total_connections_received"]
    watcher.close()
    assert asgi_codes == wsgi_codes == [200] * 3
    assert commands == []
    assert after - before == 1  # the monitor's own connection, nothing else


# -- layered limits: three identities, still one script call ------------------------------

LAYERED: dict[str, Any] = {
    "key": keys.header("X-User"),
    "rules": [Rule("/state", [Limit("100/minute;1000/hour"),
                              Limit("500/minute", key=keys.header("X-Tenant"),
                                    name="tenant")])],
    "global_limits": [Limit("10000/minute", key=keys.shared(), name="global")],
}


async def test_asgi_three_layers_one_round_trip(server: PrivateRedis, strategy: str,
                                                tmp_path: Path) -> None:
    app = RateLimitMiddleware(starlette_app, storage=server.url, strategy=strategy,
                              **LAYERED)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        await client.get("/state", headers={"X-User": "u0", "X-Tenant": "t0"})
        monitor = Monitor(server.port, tmp_path / "monitor.txt")
        responses = [await client.get("/state", headers={"X-User": f"u{n % 3}",
                                                         "X-Tenant": f"t{n % 2}"})
                     for n in range(10)]
        commands = client_commands(monitor.stop())
    assert [r.status_code for r in responses] == [200] * 10
    assert all(r.headers["ratelimit"].count(";r=") == 4 for r in responses)
    assert commands == ["EVALSHA"] * 10
    await app.limiter.aclose()  # type: ignore[union-attr]


def test_wsgi_three_layers_one_round_trip(server: PrivateRedis, strategy: str,
                                          tmp_path: Path) -> None:
    middleware = WSGIRateLimitMiddleware(flask_app().wsgi_app, storage=server.url,
                                         strategy=strategy, **LAYERED)
    with httpx.Client(transport=httpx.WSGITransport(app=middleware),
                      base_url="http://test") as client:
        client.get("/state", headers={"X-User": "u0", "X-Tenant": "t0"})
        monitor = Monitor(server.port, tmp_path / "monitor.txt")
        codes = [client.get("/state", headers={"X-User": f"u{n % 3}",
                                               "X-Tenant": f"t{n % 2}"}).status_code
                 for n in range(10)]
        commands = client_commands(monitor.stop())
    assert codes == [200] * 10
    assert commands == ["EVALSHA"] * 10
    middleware.limiter.close()  # type: ignore[union-attr]
