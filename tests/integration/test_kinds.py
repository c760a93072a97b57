"""The limits a rule chooses beside its rates: per-rule strategies (GCRA with a burst),
concurrency leases and calendar windows, on memory and on a real Redis, through the
middlewares."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from ratelimit_mw import (
    AsyncRateLimiter,
    RateLimiter,
    RateLimitMiddleware,
    Rule,
    WSGIRateLimitMiddleware,
)
from ratelimit_mw._core import Plan, PlanItem, Policy, item_key, storage_key
from ratelimit_mw._request import RequestInfo
from ratelimit_mw._rules import parse_limits
from ratelimit_mw._storage.memory import MemoryStore
from ratelimit_mw._strategies import CALENDAR, CONCURRENCY, KIND_NUMBERS, SCRIPT, STRATEGIES
from ratelimit_mw.errors import ConfigurationError
from tests.redis_monitor import Monitor, client_commands
from tests.redis_server import PrivateRedis
from tests.redis_topologies import PrivateCluster, redis_cluster

__all__ = ["redis_cluster"]  # the fixture, re-exported for pytest

GCRA = STRATEGIES["gcra"]


class InFlight:
    """Counts the requests the app is serving at once, and the most it ever saw."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


def starlette(flight: InFlight) -> Starlette:
    async def slow(request: Request) -> PlainTextResponse:
        flight.enter()
        try:
            await asyncio.sleep(float(request.query_params.get("s", "0.2")))
            if "fail" in request.query_params:
                raise RuntimeError("the app failed")
        finally:
            flight.leave()
        return PlainTextResponse("ok")

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(int(request.query_params.get("n", "3"))):
                yield b"chunk\n"
                await asyncio.sleep(0.1)

        return StreamingResponse(chunks())

    async def fast(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/slow", slow), Route("/stream", stream),
                             Route("/g", fast), Route("/burst", fast), Route("/day", fast)])


RULES = [
    Rule("/slow", concurrency=2),
    Rule("/stream", concurrency=1),
    Rule("/g", "10/second", strategy="gcra"),
    Rule("/burst", "10/second", burst=3),
    Rule("/day", "5/day", align="calendar"),
]


@pytest.fixture
async def asgi(storage_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, InFlight]]:
    flight = InFlight()
    app = RateLimitMiddleware(starlette(flight), storage=storage_url,
                              default_limits="1000/minute", rules=RULES)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        yield client, flight
    assert app.limiter is not None
    await app.limiter.aclose()


# -- GCRA per rule ----------------------------------------------------------------------


async def test_gcra_rule_is_a_burst_of_ten_then_one_per_100_ms(
        asgi: tuple[httpx.AsyncClient, InFlight]) -> None:
    client, _ = asgi
    started = time.monotonic()
    codes = [(await client.get("/g")).status_code for _ in range(11)]
    assert codes == [200] * 10 + [429]
    await asyncio.sleep(0.3)
    passed = sum([(await client.get("/g")).status_code == 200 for _ in range(6)])
    # One request per 100 ms since the burst began: 3 after the 300 ms, more only as far
    # as this machine took longer than that.
    assert 3 <= passed <= int((time.monotonic() - started) * 10)


async def test_burst_caps_what_passes_at_once(asgi: tuple[httpx.AsyncClient, InFlight]
                                              ) -> None:
    client, _ = asgi
    responses = [await client.get("/burst") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0].headers["ratelimit"] == '"/burst";r=2;t=1'
    assert responses[3].headers["retry-after"] == "1"
    assert responses[3].headers["ratelimit-policy"] == '"/burst";q=10;w=1'


# -- concurrency ----------------------------------------------------------------------


async def test_six_slow_requests_against_two_slots(asgi: tuple[httpx.AsyncClient, InFlight]
                                                   ) -> None:
    client, flight = asgi
    responses = await asyncio.gather(*[client.get("/slow") for _ in range(6)])
    assert sorted(r.status_code for r in responses) == [200] * 2 + [429] * 4
    assert flight.peak == 2
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit-policy"] == (
        '"/slow-concurrency";q=2;qu="concurrent-requests"')
    assert refused.json()["violated-policies"] == ["/slow-concurrency"]
    # Both slots are free again once the responses ended.
    again = await asyncio.gather(*[client.get("/slow") for _ in range(2)])
    assert [r.status_code for r in again] == [200, 200]


async def test_an_app_that_raises_releases_its_slot(
        asgi: tuple[httpx.AsyncClient, InFlight]) -> None:
    client, _ = asgi
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await client.get("/slow", params={"s": "0", "fail": "1"})
    responses = await asyncio.gather(*[client.get("/slow") for _ in range(2)])
    assert [r.status_code for r in responses] == [200, 200]


async def test_a_streaming_response_holds_its_slot_until_the_last_chunk(
        storage_url: str) -> None:
    app = RateLimitMiddleware(starlette(InFlight()), storage=storage_url, rules=RULES)
    chunk_sent = asyncio.Event()
    go_on = asyncio.Event()
    statuses: list[int] = []

    async def slow_client(message: Any) -> None:
        # A client that reads the first chunk, then stalls until told to go on.
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif message["type"] == "http.response.body" and not chunk_sent.is_set():
            chunk_sent.set()
            await go_on.wait()

    def receiver() -> Any:
        # The request, then nothing: the client stays connected.
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> Any:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()
            return None

        return receive

    streaming = asyncio.ensure_future(app(_scope("/stream", b"n=5"), receiver(),
                                          slow_client))
    await asyncio.wait_for(chunk_sent.wait(), 5)
    await app(_scope("/stream", b"n=1"), receiver(), slow_client)
    assert statuses == [200, 429]
    go_on.set()
    await asyncio.wait_for(streaming, 5)
    await asyncio.wait_for(app(_scope("/stream", b"n=1"), receiver(), slow_client), 5)
    assert statuses == [200, 429, 200]
    assert app.limiter is not None
    await app.limiter.aclose()


def _scope(path: str, query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
            "query_string": query, "headers": [], "client": ("203.0.113.7", 1),
            "scheme": "http", "server": ("t", 80), "asgi": {"version": "3.0"},
            "http_version": "1.1", "root_path": ""}


async def test_a_client_disconnect_releases_the_slot(storage_url: str) -> None:
    """The app learns of the disconnect from ``receive()``: the slot frees then, while the
    app is still winding down."""
    heard = asyncio.Event()
    finish = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        if scope["path"] == "/hang":
            while message["type"] != "http.disconnect":
                message = await receive()
            heard.set()
            await finish.wait()
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = RateLimitMiddleware(app, storage=storage_url,
                                     rules=[Rule("/{p}", concurrency=1)])
    messages = [{"type": "http.request", "body": b"", "more_body": False},
                {"type": "http.disconnect"}]

    async def receive() -> Any:
        if len(messages) == 1:
            await asyncio.sleep(0.05)  # the client goes away a moment later
        return messages.pop(0)

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    hanging = asyncio.ensure_future(middleware(_scope("/hang"), receive, send))
    await asyncio.wait_for(heard.wait(), 5)

    async def quick_receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    await middleware(_scope("/hang2"), quick_receive, send)
    # /hang and /hang2 are one rule ("/{p}"), one identity: one slot, now free.
    assert sent[-2]["status"] == 200
    finish.set()
    await hanging
    assert middleware.limiter is not None
    await middleware.limiter.aclose()


def test_wsgi_releases_when_the_response_is_closed(storage_url: str) -> None:
    flight = InFlight()
    lock = threading.Lock()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        with lock:
            flight.enter()
        time.sleep(0.3)
        with lock:
            flight.leave()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = WSGIRateLimitMiddleware(app, storage=storage_url,
                                         rules=[Rule("/slow", concurrency=2)])

    def call() -> tuple[str, Any]:
        status: list[str] = []
        body = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/slow",
                           "REMOTE_ADDR": "203.0.113.7", "wsgi.url_scheme": "http"},
                          lambda s, h, *exc: status.append(s))
        chunks = list(body)
        assert chunks
        return status[0], body

    results: list[tuple[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(status for status, _ in results)
    assert statuses == ["200 OK"] * 2 + ["429 Too Many Requests"] * 4
    assert flight.peak == 2
    # The server has not closed the two bodies yet: their slots are still taken.
    assert call()[0].startswith("429")
    for _, body in results:
        if hasattr(body, "close"):
            body.close()
    assert call()[0] == "200 OK"
    assert middleware.limiter is not None
    middleware.limiter.close()


async def test_one_round_trip_to_take_a_slot_and_one_to_release_it(tmp_path: Path) -> None:
    server = PrivateRedis()
    try:
        flight = InFlight()
        app = RateLimitMiddleware(starlette(flight), storage=server.url,
                                  default_limits="1000/minute", rules=RULES)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as client:
            await client.get("/g")  # warm up: connect, load the script
            monitor = Monitor(server.port, tmp_path / "monitor.txt")
            for path in ("/g", "/burst", "/day"):
                assert (await client.get(path)).status_code == 200
            assert (await client.get("/slow", params={"s": "0"})).status_code == 200
            commands = client_commands(monitor.stop())
        assert commands == ["EVALSHA"] * 4 + ["ZREM"]
        assert app.limiter is not None
        await app.limiter.aclose()
    finally:
        server.stop()


# -- calendar windows -----------------------------------------------------------------


def _calendar_plan(tz: str | None = None) -> Plan:
    policy = Policy(rules=[Rule("/day", "5/day", align="calendar", tz=tz)])
    plan = policy.plan(RequestInfo("GET", "/day", client="203.0.113.7"))
    assert plan is not None
    return plan


def test_calendar_reset_is_the_distance_to_the_next_utc_midnight() -> None:
    frozen = datetime(2026, 12, 6, 23, 59, 59, tzinfo=timezone.utc).timestamp()
    store = MemoryStore("fixed-window", lambda: frozen)
    decision = store.decision(_calendar_plan())
    assert decision.allowed
    assert decision.quotas[0].remaining == 4
    assert decision.quotas[0].reset_at == frozen + 1
    # A second later the day has turned: the count starts again.
    frozen += 1
    assert store.decision(_calendar_plan()).quotas[0].remaining == 4


def test_calendar_windows_turn_in_the_rules_time_zone() -> None:
    # 14:59:59 UTC is 23:59:59 in Tokyo (UTC+9, no DST).
    frozen = datetime(2026, 12, 6, 14, 59, 59, tzinfo=timezone.utc).timestamp()
    store = MemoryStore("fixed-window", lambda: frozen)
    assert store.decision(_calendar_plan("Asia/Tokyo")).quotas[0].reset_at == frozen + 1


def test_calendar_on_redis_counts_to_midnight(redis_url: str,
                                              redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_url)
    try:
        before = time.time()
        quotas = [limiter.check(_calendar_plan()).quotas[0] for _ in range(6)]
        midnight = (before // 86400 + 1) * 86400
        assert [q.allowed for q in quotas] == [True] * 5 + [False]
        assert all(q.reset_at == pytest.approx(midnight, abs=1.5) for q in quotas)
        assert quotas[-1].retry_after == pytest.approx(midnight - time.time(), abs=1.5)
        # The key lives until midnight, plus a grace second for lagging clocks.
        (key,) = redis_client.keys("*calendar*")
        assert redis_client.pttl(key) / 1000 == pytest.approx(midnight + 1 - time.time(),
                                                              abs=1.5)
    finally:
        limiter.close()


# -- memory and Redis decide a mixed plan alike ----------------------------------------

_TIME = "redis.call('TIME')"


def _frozen_script() -> str:
    assert SCRIPT.count(_TIME) == 1
    return SCRIPT.replace(_TIME, "{ARGV[#ARGV - 1], ARGV[#ARGV]}")


_steps = st.lists(st.tuples(
    st.one_of(st.integers(0, 3), st.integers(0, 400), st.integers(0, 1200)),  # ms on
    st.integers(1, 4),  # cost
    st.sampled_from(["hit", "hit", "peek", "release"]),
), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(steps=_steps, burst=st.sampled_from([0, 2, 5]), slots=st.integers(1, 3))
def test_memory_and_redis_decide_mixed_kinds_alike(redis_url: str, burst: int, slots: int,
                                                   steps: list[tuple[int, int, str]]) -> None:
    """A plan of a GCRA rate (with a burst), a concurrency limit and a calendar hour: the
    same integers from the script (its clock frozen) and from memory, hit by hit."""
    client = redis.Redis.from_url(redis_url)
    try:
        script = client.register_script(_frozen_script())
        key = storage_key("kinds-property", uuid.uuid4().hex)
        now = 1_800_000_000_000
        store = MemoryStore("fixed-window", lambda: now / 1000)
        (rate,) = parse_limits("5/second", "test")
        (hour,) = parse_limits("9/hour", "test")
        (slot,) = parse_limits(f"{slots}/5 seconds", "test")
        leases: list[str] = []
        for number, (advance, cost, action) in enumerate(steps):
            now += advance
            items = (PlanItem(rate, key, cost, "g", strategy=GCRA, option=burst),
                     PlanItem(slot, key + "/!c", cost, "c", strategy=CONCURRENCY,
                              option=5000),
                     PlanItem(hour, key + "/@h", cost, "h", strategy=CALENDAR, option=None))
            plan = Plan("r", key, items, lease=True)
            keys = [k for item in items
                    for k in item.strategy.redis_keys("rlmw:x", item_key(item))]  # type: ignore[union-attr]
            if action == "release":
                if leases:
                    lease = leases.pop(0)
                    store.release(plan, lease)
                    client.zrem(keys[1], lease)
                continue
            lease = str(number) if action == "hit" else ""
            args: list[int | str] = [len(items), int(action == "hit"), 0, 0, lease]
            for item in items:
                spec = item.strategy
                assert spec is not None
                args += [KIND_NUMBERS[spec.name], item.limit.amount, item.limit.get_expiry(),
                         cost, spec.argument(item, now / 1000)]
            args += [now // 1000, now % 1000 * 1000]
            on_redis = [int(v) for v in script(keys=keys, args=args)][:-2]
            in_memory = store._decide(plan, now, action == "hit", lease)
            assert on_redis == in_memory, (advance, cost, action)
            if action == "hit" and in_memory[0] and in_memory[5] and in_memory[8]:
                leases.append(lease)
    finally:
        client.close()


# -- the limiters, the CLI and configuration -----------------------------------------


def _ok(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def test_hit_peek_and_reset_reach_a_rules_counters(storage_url: str) -> None:
    limiter = RateLimiter(storage_url)
    app = WSGIRateLimitMiddleware(_ok, limiter=limiter,
                                  rules=[Rule("/burst", "10/second", burst=3)])
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/burst", "REMOTE_ADDR": "203.0.113.7",
               "wsgi.url_scheme": "http"}
    app(environ, lambda *a: None)
    identity = "ip:203.0.113.7"
    assert limiter.peek("10/second", "/burst", identity, burst=3).remaining == 2
    assert limiter.hit("10/second", "/burst", identity, burst=3).remaining == 1
    limiter.reset("10/second", "/burst", identity, burst=3)
    assert limiter.peek("10/second", "/burst", identity, burst=3).remaining == 3
    limiter.close()


async def test_async_hit_with_a_strategy_of_its_own(storage_url: str) -> None:
    limiter = AsyncRateLimiter(storage_url)
    quotas = [await limiter.hit("10/second", "u", strategy="gcra", burst=2)
              for _ in range(3)]
    assert [q.allowed for q in quotas] == [True, True, False]
    assert 0 < quotas[-1].retry_after <= 0.1
    await limiter.aclose()


@pytest.mark.parametrize(("options", "message"), [
    ({"burst": 3, "strategy": "moving-window"}, "burst= is GCRA's bucket size"),
    ({"burst": 0}, "burst=0: must be a whole number >= 1"),
    ({"strategy": "leaky"}, "strategy='leaky': use one of"),
    ({"align": "calendar", "limits": "10/5 minutes"}, "needs windows of one unit"),
    ({"align": "week"}, "the one alignment is 'calendar'"),
    ({"tz": "Europe/Paris"}, "add align='calendar'"),
    ({"align": "calendar", "tz": "Mars/Olympus"}, "is not a time zone"),
    ({"align": "calendar", "strategy": "gcra"}, "counts fixed calendar windows"),
    ({"concurrency": 0}, "concurrency=0: must be a whole number >= 1"),
    ({"concurrency": 2, "concurrency_timeout": "soon"}, "concurrency_timeout"),
])
def test_bad_options_fail_at_construction(options: dict[str, Any], message: str) -> None:
    limits = options.pop("limits", "10/day")
    with pytest.raises(ConfigurationError, match=message):
        RateLimitMiddleware(starlette(InFlight()), storage="memory://",
                            rules=[Rule("/x", limits, **options)])


def test_storages_without_scripts_refuse_rule_strategies() -> None:
    import limits.aio.storage

    with pytest.raises(ConfigurationError, match="need memory:// or Redis"):
        RateLimitMiddleware(starlette(InFlight()), storage=limits.aio.storage.MemoryStorage(),
                            rules=[Rule("/x", concurrency=2)])


def test_limiter_releases_are_idempotent_and_free_slots(storage_url: str) -> None:
    limiter = RateLimiter(storage_url)
    policy = Policy(rules=[Rule("/x", concurrency=1)])
    plan = policy.plan(RequestInfo("GET", "/x", client="203.0.113.7"))
    assert plan is not None
    assert plan.lease
    first = limiter.check(plan)
    assert first.allowed
    assert first.lease
    refused = limiter.check(plan)
    assert not refused.allowed
    assert not refused.lease
    limiter.release(first)
    limiter.release(first)
    assert limiter.check(plan).allowed
    limiter.close()



# -- Redis Cluster --------------------------------------------------------------------


async def test_a_mixed_plan_on_a_cluster_is_one_slot_and_one_call(
        redis_cluster: PrivateCluster) -> None:
    """A rule's GCRA burst, its concurrency lease and the global fixed window: every key
    of the identity in the slot of the rule's hash tag, decided in one script call;
    the lease is released on the node that holds it."""
    name = f"kinds-{uuid.uuid4().hex}"
    policy = Policy(global_limits="1000/minute", rules=[
        Rule("/x", "10/second", burst=2, concurrency=1, name=name)])
    plan = policy.plan(RequestInfo("GET", "/x", client="192.0.2.1"))
    assert plan is not None
    assert plan.lease
    limiter = AsyncRateLimiter(redis_cluster.url)
    try:
        first = await limiter.acheck(plan)
        assert first.allowed
        assert first.lease
        busy = await limiter.acheck(plan)
        assert not busy.allowed
        assert busy.violated == (f"{name}-concurrency",)
        await limiter.arelease(first)
        second = await limiter.acheck(plan)
        assert second.allowed  # the slot is free; the burst of 2 is now spent
        await limiter.arelease(second)
        third = await limiter.acheck(plan)
        assert third.violated == (name,)
        tag = plan.items[0].key[1:-1]
        slot = int(redis_cluster.execute("CLUSTER", "KEYSLOT", tag))
        assert int(redis_cluster.execute("CLUSTER", "KEYSLOT",
                                         plan.items[1].key.encode())) == slot
    finally:
        await limiter.aclose()


async def test_concurrency_on_a_websocket_route_counts_open_connections(
        storage_url: str) -> None:
    """A websocket holds its slot from the handshake until the app's handler returns."""
    close = asyncio.Event()
    accepted = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        accepted.set()
        await close.wait()
        await send({"type": "websocket.close", "code": 1000})

    middleware = RateLimitMiddleware(app, storage=storage_url,
                                     rules=[Rule("/ws", concurrency=1)])
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    scope = {**_scope("/ws"), "type": "websocket", "scheme": "ws", "subprotocols": []}
    first = asyncio.ensure_future(middleware(dict(scope), receive, send))
    await asyncio.wait_for(accepted.wait(), 5)
    await middleware(dict(scope), receive, send)  # a second connection, refused
    assert sent[-1] == {"type": "websocket.close", "code": 1008,
                        "reason": "rate limit exceeded"}
    close.set()
    await asyncio.wait_for(first, 5)
    accepted.clear()
    close.clear()
    third = asyncio.ensure_future(middleware(dict(scope), receive, send))
    await asyncio.wait_for(accepted.wait(), 5)  # the slot was freed
    close.set()
    await asyncio.wait_for(third, 5)
    assert middleware.limiter is not None
    await middleware.limiter.aclose()
