"""Refusals repeated locally (``local_denials``): once Redis refuses a client, the same
refusal is answered without a storage call until it stops holding, never longer, every
strategy; bounded; off with one option; a reset forgets it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ratelimit_mw import (
    AsyncRateLimiter,
    RateLimiter,
    RateLimitMiddleware,
    RequestInfo,
    Rule,
    WSGIRateLimitMiddleware,
)
from ratelimit_mw._core import Policy
from ratelimit_mw._storage.denials import Denials
from ratelimit_mw.events import RateLimitEvent
from tests.apps import flask_app, starlette_app
from tests.redis_monitor import Monitor, client_commands
from tests.redis_server import PrivateRedis

CLIENT = "203.0.113.7"


@pytest.fixture
def server() -> Any:
    redis = PrivateRedis()
    yield redis
    redis.stop()


def plan_of(limits: str, **options: Any) -> Any:
    found = Policy(rules=[Rule("/x", limits, **options)]).plan(
        RequestInfo("GET", "/x", client=CLIENT))
    assert found is not None
    return found


async def test_asgi_flood_costs_one_script_call(server: PrivateRedis, strategy: str,
                                                tmp_path: Path) -> None:
    events: list[RateLimitEvent] = []
    app = RateLimitMiddleware(starlette_app, storage=server.url, strategy=strategy,
                              rules=[Rule("/state", "3/minute"), Rule("/search", "9/minute")],
                              on_event=events.append)
    transport = httpx.ASGITransport(app=app, client=(CLIENT, 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/search")  # another rule: connect, load the script
        monitor = Monitor(server.port, tmp_path / "monitor.txt")
        responses = [await client.get("/state") for _ in range(13)]
        commands = client_commands(monitor.stop())
    assert [r.status_code for r in responses] == [200] * 3 + [429] * 10
    assert commands == ["EVALSHA"] * 4  # three allowed, the first refusal; then none
    refused = responses[3:]
    # The same answer each time: body, policy, remaining 0, a retry counting down.
    assert {r.content for r in refused} == {refused[0].content}
    assert json.loads(refused[0].content)["violated-policies"] == ["/state"]
    assert {r.headers["ratelimit-policy"] for r in refused} == {'"/state";q=3;w=60'}
    assert all(r.headers["x-ratelimit-remaining"] == "0" for r in refused)
    waits = [int(r.headers["retry-after"]) for r in refused]
    assert waits == sorted(waits, reverse=True)
    assert 0 < waits[-1] <= 60
    limited = [e for e in events if e.kind == "limited"]
    assert [e.local for e in limited] == [False] + [True] * 9
    await app.limiter.aclose()  # type: ignore[union-attr]


def test_wsgi_flood_costs_one_script_call(server: PrivateRedis, tmp_path: Path) -> None:
    app = WSGIRateLimitMiddleware(flask_app().wsgi_app, storage=server.url,
                                  rules=[Rule("/state", "2/minute"),
                                         Rule("/items/{id}", "9/minute")])
    transport = httpx.WSGITransport(app=app, remote_addr=CLIENT)
    with httpx.Client(transport=transport, base_url="http://test") as client:
        client.get("/items/1")  # another rule: connect, load the script
        monitor = Monitor(server.port, tmp_path / "monitor.txt")
        statuses = [client.get("/state").status_code for _ in range(12)]
        commands = client_commands(monitor.stop())
    assert statuses == [200] * 2 + [429] * 10
    assert commands == ["EVALSHA"] * 3
    app.limiter.close()  # type: ignore[union-attr]


def test_never_longer_than_the_storage_said(server: PrivateRedis, strategy: str) -> None:
    """The sliding counter and GCRA refuse for less than a window: so does the cache."""
    limiter = RateLimiter(server.url, strategy=strategy)
    plan = plan_of("2/second")
    assert [limiter.check(plan).allowed for _ in range(2)] == [True, True]
    refused = limiter.check(plan)
    assert not refused.allowed
    assert not refused.local
    wait = max(q.retry_after for q in refused.quotas)
    again = limiter.check(plan)
    assert again.local
    assert not again.allowed
    assert max(q.retry_after for q in again.quotas) <= wait
    time.sleep(wait + 0.02)
    after = limiter.check(plan)
    assert not after.local
    assert after.allowed  # the storage was asked again as soon as the refusal ended
    limiter.close()


async def test_a_reset_forgets_the_refusals(server: PrivateRedis) -> None:
    limiter = AsyncRateLimiter(server.url)
    plan = plan_of("1/minute")
    assert (await limiter.acheck(plan)).allowed
    assert not (await limiter.acheck(plan)).allowed
    assert (await limiter.acheck(plan)).local
    await limiter.reset("1/minute", "/x", f"ip:{CLIENT}")
    fresh = await limiter.acheck(plan)
    assert fresh.allowed
    assert not fresh.local
    await limiter.aclose()


def test_off_with_one_option(server: PrivateRedis, tmp_path: Path) -> None:
    app = WSGIRateLimitMiddleware(flask_app().wsgi_app, storage=server.url,
                                  rules=[Rule("/state", "1/minute"),
                                         Rule("/items/{id}", "9/minute")],
                                  local_denials=False)
    assert app.limiter.denials is None  # type: ignore[union-attr]
    transport = httpx.WSGITransport(app=app, remote_addr=CLIENT)
    with httpx.Client(transport=transport, base_url="http://test") as client:
        client.get("/items/1")
        monitor = Monitor(server.port, tmp_path / "monitor.txt")
        statuses = [client.get("/state").status_code for _ in range(4)]
        commands = client_commands(monitor.stop())
    assert statuses == [200, 429, 429, 429]
    assert commands == ["EVALSHA"] * 4
    app.limiter.close()  # type: ignore[union-attr]


def test_rules_that_settle_are_always_asked(server: PrivateRedis) -> None:
    """A refund elsewhere can free room before retry_after: no local repeat there."""
    limiter = RateLimiter(server.url)
    plan = plan_of("1/minute", count_when=lambda response: response.status >= 400)
    limiter.check(plan)
    assert [limiter.check(plan).local for _ in range(3)] == [False] * 3
    limiter.close()


def test_memory_storage_keeps_no_second_copy() -> None:
    assert RateLimiter("memory://").denials is None


# -- the LRU's bounds ------------------------------------------------------------------------


def refusal(client: str) -> Any:
    plan = Policy(rules=[Rule("/x", "1/minute")]).plan(RequestInfo("GET", "/x",
                                                                   client=client))
    assert plan is not None
    limiter = RateLimiter("memory://")
    limiter.check(plan)
    decision = limiter.check(plan)
    assert not decision.allowed
    return decision


def test_bounded_by_entries() -> None:
    denials = Denials(max_entries=10)
    decisions = [refusal(f"198.51.100.{n}") for n in range(25)]
    for decision in decisions:
        denials.add(decision, time.time())
    assert len(denials) == 10
    assert denials.get(decisions[0].plan) is None  # the oldest went first
    assert denials.get(decisions[-1].plan) is not None


def test_bounded_by_bytes() -> None:
    denials = Denials(max_bytes=2000)
    for n in range(50):
        denials.add(refusal(f"198.51.100.{n}"), time.time())
    assert 0 < len(denials) <= 4  # about 450 bytes an entry


@pytest.mark.parametrize("value", [0, -1, True, "10"])
def test_bad_bounds_fail_at_construction(value: object) -> None:
    with pytest.raises(Exception, match="must be a whole number >= 1"):
        Denials(max_entries=value)  # type: ignore[arg-type]


def test_local_denials_must_be_a_bool() -> None:
    with pytest.raises(Exception, match="local_denials='yes'"):
        RateLimiter("memory://", local_denials="yes")  # type: ignore[arg-type]
