"""Redis Cluster and Sentinel through our limiters: every strategy, sync and async, the
one-round-trip script on the cluster, one slot per request."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis

from ratelimit_mw import AsyncRateLimiter, RateLimiter, RateLimitMiddleware, RedisOptions, Rule
from ratelimit_mw._core import Policy
from ratelimit_mw._request import RequestInfo
from tests.redis_topologies import PrivateCluster, PrivateSentinel, redis_cluster, redis_sentinel

__all__ = ["redis_cluster", "redis_sentinel"]


def plan_for(limits: str, identity_ip: str) -> Any:
    policy = Policy(rules=[Rule("/x", limits, name="x")])
    return policy.plan(RequestInfo("GET", "/x", client=identity_ip))


def test_cluster_sync_exact(redis_cluster: PrivateCluster, strategy: str) -> None:
    limiter = RateLimiter(redis_cluster.url, strategy=strategy)  # type: ignore[arg-type]
    assert limiter._scripts is not None  # the one-round-trip path, not limits' strategies
    plan = plan_for("3/minute", f"198.51.100.{len(strategy)}")
    assert [limiter.check(plan).allowed for _ in range(5)] == [True] * 3 + [False] * 2
    limiter.close()


async def test_cluster_async_exact(redis_cluster: PrivateCluster, strategy: str) -> None:
    limiter = AsyncRateLimiter(redis_cluster.url, strategy=strategy)  # type: ignore[arg-type]
    assert limiter._scripts is not None
    plan = plan_for("3/minute", f"198.51.100.{100 + len(strategy)}")
    assert [(await limiter.acheck(plan)).allowed for _ in range(5)] == [True] * 3 + [False] * 2
    await limiter.aclose()


def test_cluster_request_with_three_limits_touches_one_slot(redis_cluster: PrivateCluster,
                                                           strategy: str) -> None:
    limiter = RateLimiter(redis_cluster.url, strategy=strategy)  # type: ignore[arg-type]
    ip = f"192.0.2.{len(strategy)}"
    plan = plan_for("10/second;100/minute;1000/hour", ip)
    for _ in range(3):  # three hits: the sliding window's second key appears too
        assert limiter.check(plan).allowed
    found: list[bytes] = []
    slots = set()
    for host, port in redis_cluster.nodes:
        node = redis.Redis(host=host, port=port)
        for key in node.scan_iter(match=f"*{ip}*"):
            found.append(key)
            slots.add(node.cluster("keyslot", key))
        node.close()
    assert len(found) == 3  # one key per limit (sliding: the current window's)
    assert len(slots) == 1  # checked on the cluster, not assumed
    limiter.close()


def test_sentinel_sync_exact_and_reads_master(redis_sentinel: PrivateSentinel,
                                              strategy: str) -> None:
    limiter = RateLimiter(redis_sentinel.url, strategy=strategy)  # type: ignore[arg-type]
    assert limiter._scripts is not None
    assert limiter.storage.use_replicas is False  # quota reads must not lag
    plan = plan_for("3/minute", "203.0.113.50")
    assert [limiter.check(plan).allowed for _ in range(5)] == [True] * 3 + [False] * 2
    assert limiter.peek("3/minute", "x", "ip:203.0.113.50").remaining == 0
    limiter.close()


async def test_sentinel_async_exact(redis_sentinel: PrivateSentinel, strategy: str) -> None:
    limiter = AsyncRateLimiter(redis_sentinel.url, strategy=strategy)  # type: ignore[arg-type]
    assert limiter._scripts is not None
    plan = plan_for("3/minute", "203.0.113.51")
    assert [(await limiter.acheck(plan)).allowed for _ in range(5)] == [True] * 3 + [False] * 2
    await limiter.aclose()


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_bad_topology_url_fails_clearly(kind: str) -> None:
    from ratelimit_mw import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown scheme"):
        RateLimiter(f"redis+{kind}s://127.0.0.1:1")


@pytest.mark.parametrize("policy", ["memory", "allow", "deny"])
async def test_cluster_burst_is_exact_with_every_policy(redis_cluster: PrivateCluster,
                                                      policy: str) -> None:
    # 200 requests at once for one identity all go to one node, more than its pool holds
    # (64 connections): they must wait for a connection, not fail over to the per-process
    # fallback, so exactly the limit passes.
    fallbacks: list[bool] = []
    app = RateLimitMiddleware(
        _ok, storage=redis_cluster.url, on_storage_error=policy,  # type: ignore[arg-type]
        rules=[Rule(f"/burst-{policy}", "100/minute", name=f"burst-{policy}")],
        redis_options=RedisOptions(socket_timeout=10, socket_connect_timeout=10,
                                   pool_timeout=30),
        on_event=lambda event: fallbacks.append(event.fallback))

    async def one(client: httpx.AsyncClient) -> int:
        return (await client.get(f"/burst-{policy}")).status_code

    transport = httpx.ASGITransport(app=app, client=("203.0.113.99", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        statuses = []
        for wave in (200, 100):
            statuses += await asyncio.gather(*(one(client) for _ in range(wave)))
    assert statuses.count(200) == 100
    assert statuses.count(429) == 200
    assert fallbacks == [False] * 300  # the storage decided every request
    await app.limiter.aclose()


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
