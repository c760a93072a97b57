"""Layered and global limits through both middlewares, memory and Redis, every strategy:
all limits of a request decided at once, a refusal consuming nothing, headers per layer.

The same scenario runs on every storage and the expected statuses, headers and counters
are written once: memory and Redis decide alike.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from typing import Any

import flask
import httpx
from redis.crc import key_slot

from ratelimit_mw import (
    AsyncRateLimiter,
    Limit,
    RateLimiter,
    RateLimitMiddleware,
    RequestInfo,
    Rule,
    WSGIRateLimitMiddleware,
    keys,
)
from ratelimit_mw._core import Plan, Policy
from ratelimit_mw._flow import arun, run
from tests.apps import flask_app, starlette_app
from tests.redis_topologies import PrivateCluster, redis_cluster

__all__ = ["redis_cluster"]  # the fixture, re-exported for pytest

OPTIONS: dict[str, Any] = {
    "key": keys.header("X-User"),
    "rules": [Rule("/state", [Limit("5/minute"),
                              Limit("3/minute", key=keys.header("X-Tenant"),
                                    name="tenant")])],
    "global_limits": [Limit("100/hour", key=keys.shared(), name="global")],
}
MEMBER = re.compile(r'"([^"]+)";r=(\d+);t=\d+')

#: (user, tenant) per request, and what each must get: the status, the RateLimit
#: members (name -> remaining) and, when refused, the violated policies.
SCENARIO: list[tuple[str, str, int, dict[str, int], list[str]]] = [
    ("alice", "acme", 200, {"/state": 4, "tenant": 2, "global": 99}, []),
    ("alice", "acme", 200, {"/state": 3, "tenant": 1, "global": 98}, []),
    ("alice", "acme", 200, {"/state": 2, "tenant": 0, "global": 97}, []),
    # The tenant is spent: bob is refused, and neither his counter nor the global moves.
    ("bob", "acme", 429, {"/state": 5, "tenant": 0, "global": 97}, ["tenant"]),
    ("bob", "acme", 429, {"/state": 5, "tenant": 0, "global": 97}, ["tenant"]),
    ("bob", "other", 200, {"/state": 4, "tenant": 2, "global": 96}, []),
    ("alice", "third", 200, {"/state": 1, "tenant": 2, "global": 95}, []),
    ("alice", "third", 200, {"/state": 0, "tenant": 1, "global": 94}, []),
    # alice's own limit refuses: her new tenant keeps its unit.
    ("alice", "third", 429, {"/state": 0, "tenant": 1, "global": 94}, ["/state"]),
]


def headers(user: str, tenant: str) -> dict[str, str]:
    return {"X-User": user, "X-Tenant": tenant}


def members(response: httpx.Response) -> dict[str, int]:
    return {name: int(left) for name, left in MEMBER.findall(response.headers["ratelimit"])}


def violated(response: httpx.Response) -> list[str]:
    if response.status_code != 429:
        return []
    return list(json.loads(response.content)["violated-policies"])


def plan_of(app: Any, user: str, tenant: str) -> Plan:
    plan = app.policy.plan(RequestInfo("GET", "/state", client="203.0.113.7",
                                       headers={"x-user": user, "x-tenant": tenant}))
    assert plan is not None
    return plan  # type: ignore[no-any-return]


async def counters(limiter: Any, plan: Plan) -> list[int]:
    """What is left of each limit of *plan*, read beside the middleware: with ``limits``'
    own strategy on Redis (a dry run of our script for GCRA, which ``limits`` does not
    know), from the store itself in memory."""
    if limiter.memory is not None:
        return [q.remaining for q in limiter.memory.quotas(plan, consume=False)]
    if limiter.strategy is None:
        flow = limiter._scripts.flow(plan, consume=False)
        decision = await arun(flow, None) if isinstance(limiter, AsyncRateLimiter) else run(
            flow, None)
        return [q.remaining for q in decision.quotas]
    left = []
    for item in plan.items:
        stats = limiter.strategy.get_window_stats(item.limit, item.key)
        if inspect.isawaitable(stats):
            stats = await stats
        left.append(int(stats.remaining))
    return left


async def asgi_scenario(app: Any) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        return [await c.get("/state", headers=headers(user, tenant))
                for user, tenant, *_ in SCENARIO]


def wsgi_scenario(app: Any) -> list[httpx.Response]:
    with httpx.Client(transport=httpx.WSGITransport(app=app),
                      base_url="http://testserver") as c:
        return [c.get("/state", headers=headers(user, tenant))
                for user, tenant, *_ in SCENARIO]


def check(responses: list[httpx.Response]) -> None:
    got = [(r.status_code, members(r), violated(r)) for r in responses]
    assert got == [(status, left, refused) for _u, _t, status, left, refused in SCENARIO]


async def test_asgi_layers_decide_together(storage_url: str, strategy: str) -> None:
    app = RateLimitMiddleware(starlette_app, storage=storage_url, strategy=strategy,
                              **OPTIONS)
    check(await asgi_scenario(app))
    # Read with limits itself: bob's refusals left his counter and the global untouched.
    assert await counters(app.limiter, plan_of(app, "bob", "acme")) == [4, 0, 94]
    assert await counters(app.limiter, plan_of(app, "carol", "third")) == [5, 1, 94]
    await app.limiter.aclose()  # type: ignore[union-attr]


def test_wsgi_layers_decide_together(storage_url: str, strategy: str) -> None:
    app = WSGIRateLimitMiddleware(flask_app().wsgi_app, storage=storage_url,
                                  strategy=strategy, **OPTIONS)
    check(wsgi_scenario(app))
    assert asyncio.run(counters(app.limiter, plan_of(app, "bob", "acme"))) == [4, 0, 94]
    app.limiter.close()  # type: ignore[union-attr]


async def test_global_limits_alone_count_every_route(storage_url: str) -> None:
    app = RateLimitMiddleware(starlette_app, storage=storage_url,
                              rules=[Rule("/health", exempt=True)], global_limits="2/minute")
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        statuses = [(await c.get(path)).status_code
                    for path in ("/state", "/search", "/health", "/state")]
        refused = await c.get("/search")
    assert statuses == [200, 200, 200, 429]
    assert json.loads(refused.content)["violated-policies"] == ["global"]
    assert refused.headers["ratelimit-policy"] == '"global";q=2;w=60'
    await app.limiter.aclose()  # type: ignore[union-attr]


def test_wsgi_global_limits_on_flask(storage_url: str) -> None:
    flask_application = flask_app()
    flask_application.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        flask_application.wsgi_app, storage=storage_url, global_limits=[
            Limit("3/minute", key=keys.shared(), name="everyone")])
    client = flask_application.test_client()
    statuses = [client.get(path, headers={"X-User": str(n)}).status_code
                for n, path in enumerate(["/state", "/items/1", "/state", "/items/2"])]
    assert statuses == [200, 200, 200, 429]
    assert isinstance(flask_application, flask.Flask)
    flask_application.wsgi_app.limiter.close()  # type: ignore[attr-defined]


# -- Redis Cluster: the identities' keys live in different slots -----------------------------


def slots(plan: Plan) -> set[int]:
    return {key_slot(item.key.encode()) for item in plan.items}


async def test_cluster_asgi_layers_across_slots(redis_cluster: PrivateCluster,
                                                strategy: str) -> None:
    redis_cluster.flushall()
    app = RateLimitMiddleware(starlette_app, storage=redis_cluster.url, strategy=strategy,
                              **OPTIONS)
    assert len(slots(plan_of(app, "bob", "acme"))) == 3  # user, tenant, everyone
    check(await asgi_scenario(app))
    assert await counters(app.limiter, plan_of(app, "bob", "acme")) == [4, 0, 94]
    await app.limiter.aclose()  # type: ignore[union-attr]


def test_cluster_wsgi_layers_across_slots(redis_cluster: PrivateCluster,
                                          strategy: str) -> None:
    redis_cluster.flushall()
    app = WSGIRateLimitMiddleware(flask_app().wsgi_app, storage=redis_cluster.url,
                                  strategy=strategy, **OPTIONS)
    check(wsgi_scenario(app))
    assert asyncio.run(counters(app.limiter, plan_of(app, "bob", "acme"))) == [4, 0, 94]
    app.limiter.close()  # type: ignore[union-attr]


def test_cluster_layers_of_one_identity_share_a_slot(redis_cluster: PrivateCluster,
                                                     ) -> None:
    redis_cluster.flushall()
    limiter = RateLimiter(redis_cluster.url)
    plan = Policy(rules=[Rule("/x", [Limit("2/minute"), Limit("5/hour", name="hourly")])]
                  ).plan(RequestInfo("GET", "/x", client="203.0.113.9"))
    # Named layers keep the identity's hash tag: one slot, one script call.
    assert plan is not None
    assert len(slots(plan)) == 1
    decisions = [limiter.check(plan) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert [q.remaining for q in decisions[-1].quotas] == [0, 3]  # the refusal took none
    limiter.close()


# -- storages without scripts (limits' own, memcached, MongoDB): tested before any hit -------


def test_storages_without_scripts_test_every_layer_before_hitting() -> None:
    import limits.storage

    limiter = RateLimiter(limits.storage.MemoryStorage())
    policy = Policy(key=keys.header("X-User"), rules=[Rule("/x", [
        Limit("5/minute"), Limit("2/minute", key=keys.header("X-Tenant"), name="tenant")])])

    def plan(user: str) -> Plan:
        found = policy.plan(RequestInfo("GET", "/x", headers={"x-user": user,
                                                              "x-tenant": "acme"}))
        assert found is not None
        return found

    assert [limiter.check(plan("alice")).allowed for _ in range(2)] == [True, True]
    refused = limiter.check(plan("bob"))
    assert not refused.allowed
    assert refused.violated == ("tenant",)
    # bob's own limit was only read: the refusal consumed none of it.
    assert [q.remaining for q in refused.quotas] == [5, 0]
    item = plan("bob").items[0]
    assert limiter.strategy.get_window_stats(item.limit, item.key).remaining == 5


# -- tiers: a limits function choosing layers per plan, memory and Redis alike ------------

TENANT = keys.header("X-Tenant")
PLANS = {"free": [Limit("2/minute"), Limit("3/minute", key=TENANT, name="tenant")],
         "pro": [Limit("4/minute"), Limit("3/minute", key=TENANT, name="tenant")]}


def plan_limits(request: RequestInfo) -> list[Limit]:
    return PLANS.get(request.header("x-plan") or "", PLANS["free"])


async def test_tiers_with_layers_and_globals(storage_url: str, strategy: str) -> None:
    app = RateLimitMiddleware(starlette_app, storage=storage_url, strategy=strategy,
                              key=keys.header("X-User"), rules=[Rule("/state", plan_limits)],
                              global_limits="100/hour")
    calls = [("a", "free"), ("a", "free"), ("a", "free"), ("a", "pro"), ("b", "pro")]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        responses = [await c.get("/state", headers={"X-User": user, "X-Plan": plan,
                                                     "X-Tenant": "t"})
                     for user, plan in calls]
    assert [(r.status_code, members(r), violated(r)) for r in responses] == [
        (200, {"/state": 1, "tenant": 2, "global": 99}, []),
        (200, {"/state": 0, "tenant": 1, "global": 98}, []),
        (429, {"/state": 0, "tenant": 1, "global": 98}, ["/state"]),
        # The pro plan's quota is another counter; the tenant's is the same one.
        (200, {"/state": 3, "tenant": 0, "global": 97}, []),
        (429, {"/state": 4, "tenant": 0, "global": 100}, ["tenant"]),
    ]
    assert responses[3].headers["ratelimit-policy"] == (
        '"/state";q=4;w=60, "tenant";q=3;w=60, "global";q=100;w=3600')
    await app.limiter.aclose()  # type: ignore[union-attr]
