"""Counting what happened: ``count_when`` and ``response_cost`` through both middlewares,
on memory and Redis, every strategy. A request reserves its cost before the app runs and
is settled when its response starts, so concurrent requests cannot overshoot.

The expected answers are written once for every storage: memory and Redis decide alike.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ratelimit_mw import (
    AsyncRateLimiter,
    Limit,
    RateLimiter,
    RateLimitMiddleware,
    RequestInfo,
    ResponseInfo,
    Rule,
    WSGIRateLimitMiddleware,
    keys,
)
from ratelimit_mw._core import Policy
from tests.integration.realservers import serve, server_env
from tests.redis_monitor import Monitor, client_commands
from tests.redis_server import PrivateRedis
from tests.redis_topologies import PrivateCluster, redis_cluster

__all__ = ["redis_cluster"]  # the fixture, re-exported for pytest

CLIENT = "203.0.113.7"
IDENTITY = f"ip:{CLIENT}"


def failed(response: ResponseInfo) -> bool:
    return response.status >= 400


def tokens(response: ResponseInfo) -> int:
    return int(response.header("X-Tokens-Used") or 0)


class Upstream:
    """What the app answers next, and how many requests reached it."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.tokens = "0"
        self.calls = 0
        self.lock = threading.Lock()

    def reached(self) -> None:
        with self.lock:
            self.calls += 1


def starlette_app(upstream: Upstream) -> Starlette:
    async def endpoint(request: Request) -> Response:
        upstream.reached()
        if upstream.delay:
            await asyncio.sleep(upstream.delay)
        return PlainTextResponse("x", status_code=upstream.status,
                                 headers={"X-Tokens-Used": upstream.tokens})

    async def stream(request: Request) -> Response:
        upstream.reached()

        async def chunks() -> Any:
            for n in range(3):
                yield f"chunk{n}\n".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(chunks(), status_code=upstream.status)

    return Starlette(routes=[Route("/login", endpoint, methods=["POST"]),
                             Route("/llm", endpoint, methods=["POST"]),
                             Route("/stream", stream)])


def flask_app(upstream: Upstream) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.post("/login")
    @app.post("/llm", endpoint="llm")
    def endpoint() -> flask.Response:
        upstream.reached()
        if upstream.delay:
            time.sleep(upstream.delay)
        return flask.Response("x", status=upstream.status,
                              headers={"X-Tokens-Used": upstream.tokens})

    return app


RULES = [Rule("/login", "5/minute", methods=["POST"], count_when=failed),
         Rule("/llm", "100/minute", methods=["POST"], cost=10, response_cost=tokens)]


def asgi(upstream: Upstream, storage: str, strategy: str = "fixed-window",
         **options: Any) -> RateLimitMiddleware:
    options.setdefault("rules", RULES)
    return RateLimitMiddleware(starlette_app(upstream), storage=storage, strategy=strategy,
                               **options)


def wsgi(upstream: Upstream, storage: str, strategy: str = "fixed-window",
         **options: Any) -> WSGIRateLimitMiddleware:
    options.setdefault("rules", RULES)
    return WSGIRateLimitMiddleware(flask_app(upstream).wsgi_app, storage=storage,
                                   strategy=strategy, **options)


def asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(CLIENT, 1)),
                             base_url="http://test")


def wsgi_client(app: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app, remote_addr=CLIENT),
                        base_url="http://test")


# -- the failed-login recipe, one request at a time ------------------------------------------


async def test_asgi_counts_only_failures(storage_url: str, strategy: str) -> None:
    upstream = Upstream()
    app = asgi(upstream, storage_url, strategy)
    limiter = app.limiter
    assert isinstance(limiter, AsyncRateLimiter)
    async with asgi_client(app) as client:
        successes = [(await client.post("/login")).status_code for _ in range(10)]
        left = await limiter.peek("5/minute", "/login", IDENTITY)
        upstream.status = 401
        failures = [(await client.post("/login")).status_code for _ in range(6)]
    assert successes == [200] * 10
    assert left.remaining == 5  # ten successes, every one refunded
    assert failures == [401] * 5 + [429]
    assert upstream.calls == 15
    await limiter.aclose()


def test_wsgi_counts_only_failures(storage_url: str, strategy: str) -> None:
    upstream = Upstream()
    app = wsgi(upstream, storage_url, strategy)
    limiter = app.limiter
    assert isinstance(limiter, RateLimiter)
    with wsgi_client(app) as client:
        successes = [client.post("/login").status_code for _ in range(10)]
        left = limiter.peek("5/minute", "/login", IDENTITY)
        upstream.status = 401
        failures = [client.post("/login").status_code for _ in range(6)]
    assert successes == [200] * 10
    assert left.remaining == 5
    assert failures == [401] * 5 + [429]
    limiter.close()


async def test_a_streaming_response_is_settled_at_its_start(storage_url: str) -> None:
    upstream = Upstream()
    app = asgi(upstream, storage_url, rules=[Rule("/stream", "2/minute", count_when=failed)])
    async with asgi_client(app) as client:
        bodies = [(await client.get("/stream")).content for _ in range(4)]
        upstream.status = 500
        statuses = [(await client.get("/stream")).status_code for _ in range(3)]
    assert bodies == [b"chunk0\nchunk1\nchunk2\n"] * 4
    assert statuses == [500, 500, 429]
    await app.limiter.aclose()  # type: ignore[union-attr]


# -- response-reported cost ----------------------------------------------------------------


async def test_asgi_response_cost_settles_the_difference(storage_url: str,
                                                         strategy: str) -> None:
    upstream = Upstream()
    app = asgi(upstream, storage_url, strategy)
    limiter = app.limiter
    assert isinstance(limiter, AsyncRateLimiter)
    left = []
    async with asgi_client(app) as client:
        for used in ("3", "30", "0"):
            upstream.tokens = used
            assert (await client.post("/llm")).status_code == 200
            left.append((await limiter.peek("100/minute", "/llm", IDENTITY)).remaining)
    # Reserved 10 each time: 3 used (7 back), 30 used (20 more), 0 used (all back).
    assert left == [97, 67, 67]
    await limiter.aclose()


def test_wsgi_response_cost_may_run_into_debt(storage_url: str, strategy: str) -> None:
    upstream = Upstream()
    app = wsgi(upstream, storage_url, strategy)
    limiter = app.limiter
    assert isinstance(limiter, RateLimiter)
    with wsgi_client(app) as client:
        upstream.tokens = "95"
        first = client.post("/llm").status_code
        after_debt = limiter.peek("100/minute", "/llm", IDENTITY).remaining
        refused = client.post("/llm").status_code  # 10 more would not fit in the 5 left
    assert (first, after_debt, refused) == (200, 5, 429)
    limiter.close()


# -- concurrency: reserved before the app runs, so exactly the limit gets through ------------


async def test_asgi_twenty_concurrent_failures_exactly_five_reach_the_app(
        redis_url: str, redis_client: Any, strategy: str) -> None:
    upstream = Upstream(status=401, delay=0.05)
    app = asgi(upstream, redis_url, strategy)
    async with asgi_client(app) as client:
        responses = await asyncio.gather(*(client.post("/login") for _ in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] * 5 + [429] * 15
    assert upstream.calls == 5
    await app.limiter.aclose()  # type: ignore[union-attr]


def test_wsgi_twenty_threads_of_failures_exactly_five_reach_the_app(
        redis_url: str, redis_client: Any) -> None:
    upstream = Upstream(status=401, delay=0.05)
    app = wsgi(upstream, redis_url)
    statuses: list[int] = []
    start = threading.Barrier(20)

    def one() -> None:
        with wsgi_client(app) as client:
            start.wait()
            statuses.append(client.post("/login").status_code)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [401] * 5 + [429] * 15
    assert upstream.calls == 5
    app.limiter.close()  # type: ignore[union-attr]


def test_gunicorn_four_workers_exactly_five_failures_reach_the_app(
        redis_url: str, redis_client: Any, tmp_path: Path) -> None:
    env = server_env(redis_url, "5/minute", name="count-gunicorn")
    with serve("wsgi", 4, env, tmp_path) as server, httpx.Client(
            base_url=server.base, timeout=30) as client:
        statuses: list[int] = []
        start = threading.Barrier(20)

        def one() -> None:
            start.wait()
            statuses.append(client.get("/fail").status_code)

        threads = [threading.Thread(target=one) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert sorted(statuses) == [401] * 5 + [429] * 15


# -- round trips: 1 when the reservation counts, 2 when it is settled ------------------------


async def test_round_trips(tmp_path: Path) -> None:
    server = PrivateRedis()
    upstream = Upstream()
    app = asgi(upstream, server.url)
    try:
        async with asgi_client(app) as client:
            await client.post("/login")  # connect, load the scripts
            upstream.status = 401
            monitor = Monitor(server.port, tmp_path / "counted.txt")
            await client.post("/login")
            counted = client_commands(monitor.stop())
            upstream.status = 200
            monitor = Monitor(server.port, tmp_path / "refunded.txt")
            await client.post("/login")
            refunded = client_commands(monitor.stop())
        assert counted == ["EVALSHA"]
        assert refunded == ["EVALSHA", "EVALSHA"]
    finally:
        await app.limiter.aclose()  # type: ignore[union-attr]
        server.stop()


# -- a settle that fails is logged once and dropped ------------------------------------------


def test_a_failed_settle_never_fails_the_response(caplog: pytest.LogCaptureFixture) -> None:
    server = PrivateRedis()
    upstream = Upstream()
    app = wsgi(upstream, server.url, on_storage_error="allow")
    try:
        with wsgi_client(app) as client:
            assert client.post("/login").status_code == 200  # reserved and refunded
            plan = app.policy.plan(RequestInfo("POST", "/login", client=CLIENT))
            assert plan is not None
            limiter = app.limiter
            assert isinstance(limiter, RateLimiter)
            decision = limiter.check(plan)
            server.stop()
            with caplog.at_level(logging.WARNING, logger="ratelimit_mw"):
                for _ in range(3):
                    limiter.settle(decision, (-1,))
        warnings = [r for r in caplog.records if "settling reservations failed" in
                    r.getMessage()]
        assert len(warnings) == 1
    finally:
        app.limiter.close()  # type: ignore[union-attr]
        server.stop()


# -- Redis Cluster: a settle across slots ----------------------------------------------------


async def test_cluster_settles_every_layer(redis_cluster: PrivateCluster,
                                           strategy: str) -> None:
    redis_cluster.flushall()
    upstream = Upstream()
    rule = Rule("/login", [Limit("5/minute"), Limit("7/minute", key=keys.shared(),
                                                    name="everyone")],
                methods=["POST"], count_when=failed)
    app = asgi(upstream, redis_cluster.url, strategy, rules=[rule])
    limiter = app.limiter
    assert isinstance(limiter, AsyncRateLimiter)
    async with asgi_client(app) as client:
        assert [(await client.post("/login")).status_code for _ in range(8)] == [200] * 8
        upstream.status = 401
        failures = [(await client.post("/login")).status_code for _ in range(6)]
    assert failures == [401] * 5 + [429]
    everyone = await limiter.peek("7/minute", "/login", "shared:all", layer="everyone")
    assert everyone.remaining == 2
    await limiter.aclose()


# -- configuration ---------------------------------------------------------------------------


def test_settling_needs_scripts() -> None:
    import limits.storage

    with pytest.raises(Exception, match=r"count_when, response_cost, penalty, .* need memory"):
        WSGIRateLimitMiddleware(flask_app(Upstream()).wsgi_app,
                                limiter=RateLimiter(limits.storage.MemoryStorage()),
                                rules=RULES)


@pytest.mark.parametrize(("options", "message"), [
    ({"count_when": "status >= 400"}, "count_when='status >= 400' is not callable"),
    ({"response_cost": 5}, "response_cost=5 is not callable"),
])
def test_bad_settling_options_fail_at_construction(options: dict[str, Any],
                                                   message: str) -> None:
    with pytest.raises(Exception, match=message):
        Rule("/x", "1/minute", **options)


def test_a_broken_count_function_leaves_the_reservation(caplog: pytest.LogCaptureFixture,
                                                        ) -> None:
    def broken(response: ResponseInfo) -> bool:
        raise RuntimeError("bug")

    upstream = Upstream()
    app = wsgi(upstream, "memory://", rules=[Rule("/login", "2/minute", count_when=broken)])
    with wsgi_client(app) as client, caplog.at_level(logging.ERROR, logger="ratelimit_mw"):
        statuses = [client.post("/login").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # counted as reserved; the responses went out
    assert "count_when / response_cost failed" in caplog.text
    plan = Policy(rules=[Rule("/login", "2/minute", count_when=broken)]).plan(
        RequestInfo("POST", "/login", client=CLIENT))
    assert plan is not None
    assert plan.settle is not None


# -- the limiter's settle, memory and Redis alike --------------------------------------------


def settling_plan(limits: str) -> Any:
    found = Policy(rules=[Rule("/x", limits, count_when=failed)]).plan(
        RequestInfo("GET", "/x", client=CLIENT))
    assert found is not None
    return found


def test_memory_and_redis_settle_alike(storage_url: str, strategy: str) -> None:
    limiter = RateLimiter(storage_url, strategy=strategy)
    plan = settling_plan("5/minute")
    first, second = limiter.check(plan), limiter.check(plan)
    limiter.settle(first, (-1,))   # a refund
    limiter.settle(second, (2,))   # a debt: the response cost 3
    assert limiter.peek("5/minute", "/x", IDENTITY).remaining == 2
    limiter.close()


def test_redis_refund_after_the_window_rolled_over_changes_nothing(
        redis_url: str, redis_client: Any, strategy: str) -> None:
    limiter = RateLimiter(redis_url, strategy=strategy)
    plan = settling_plan("1/second")
    old = limiter.check(plan)
    time.sleep(1.1)
    new = limiter.check(plan)
    assert new.allowed
    limiter.settle(old, (-1,))
    assert limiter.peek("1/second", "/x", IDENTITY).remaining == 0  # still counts
    limiter.settle(new, (-1,))
    assert limiter.peek("1/second", "/x", IDENTITY).remaining == 1
    limiter.close()


# -- the penalty box -------------------------------------------------------------------------


async def test_asgi_penalty_keeps_refusing(storage_url: str, strategy: str) -> None:
    upstream = Upstream()
    app = asgi(upstream, storage_url, strategy,
               rules=[Rule("/login", "2/second", methods=["POST"], penalty="15 minutes")])
    limiter = app.limiter
    assert isinstance(limiter, AsyncRateLimiter)
    async with asgi_client(app) as client:
        statuses = [(await client.post("/login")).status_code for _ in range(3)]
        refused = await client.post("/login")
    assert statuses == [200, 200, 429]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 890  # the penalty, not the 1 s window
    assert refused.headers["ratelimit"].startswith('"/login";r=0;t=')
    assert int(refused.headers["ratelimit"].rsplit("t=", 1)[1]) > 890
    assert await limiter.penalty("/login", IDENTITY) > 890
    # Time alone would have freed the window: the penalty still refuses.
    await asyncio.sleep(1.05)
    async with asgi_client(app) as client:
        assert (await client.post("/login")).status_code == 429
        assert await limiter.penalty("/login", IDENTITY, clear=True) == 0
        assert (await client.post("/login")).status_code == 200
    assert upstream.calls == 3
    await limiter.aclose()


def test_wsgi_penalty_only_for_the_rule_that_refused(storage_url: str) -> None:
    upstream = Upstream()
    app = wsgi(upstream, storage_url, global_limits=[Limit("3/minute", key=keys.shared(),
                                                           name="everyone")],
               rules=[Rule("/login", "10/minute", methods=["POST"], penalty=60),
                      Rule("/llm", "10/minute", methods=["POST"])])
    with wsgi_client(app) as client:
        statuses = [client.post(path).status_code for path in ("/llm",) * 3 + ("/login",)]
    # The global limit refused /login: not its rule's limit, so no penalty.
    assert statuses == [200, 200, 200, 429]
    assert app.limiter.penalty("/login", IDENTITY) == 0  # type: ignore[union-attr]
    app.limiter.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("local", [False, True])
def test_round_trips_with_a_penalty(tmp_path: Path, local: bool) -> None:
    server = PrivateRedis()
    app = wsgi(Upstream(), server.url, local_denials=local,
               rules=[Rule("/login", "1/minute", methods=["POST"], penalty="1 hour")])
    try:
        with wsgi_client(app) as client:
            client.post("/login")
            monitor = Monitor(server.port, tmp_path / "monitor.txt")
            statuses = [client.post("/login").status_code for _ in range(3)]
            commands = client_commands(monitor.stop())
        assert statuses == [429] * 3
        # Decided in the same call, boxed or not; with local denials, the penalty's
        # refusal is then repeated without asking until it ends.
        assert commands == ["EVALSHA"] * (1 if local else 3)
    finally:
        app.limiter.close()  # type: ignore[union-attr]
        server.stop()


async def test_cluster_penalty_across_slots(redis_cluster: PrivateCluster) -> None:
    redis_cluster.flushall()
    rule = Rule("/login", [Limit("1/minute"), Limit("9/minute", key=keys.shared(),
                                                    name="everyone")],
                methods=["POST"], penalty="10 minutes")
    app = asgi(Upstream(), redis_cluster.url, rules=[rule])
    limiter = app.limiter
    assert isinstance(limiter, AsyncRateLimiter)
    async with asgi_client(app) as client:
        statuses = [(await client.post("/login")).status_code for _ in range(3)]
    assert statuses == [200, 429, 429]
    assert await limiter.penalty("/login", IDENTITY) > 590
    # The refusals consumed nothing of the shared layer.
    everyone = await limiter.peek("9/minute", "/login", "shared:all", layer="everyone")
    assert everyone.remaining == 8
    await limiter.aclose()


@pytest.mark.parametrize(("penalty", "message"), [
    ("soon", "write a duration"), (0, "at least 1 ms"), (True, "write a duration")])
def test_bad_penalties_fail_at_construction(penalty: object, message: str) -> None:
    with pytest.raises(Exception, match=message):
        Rule("/x", "1/minute", penalty=penalty)  # type: ignore[arg-type]
