"""Invalidation by an unsafe request's Location and Content-Location (RFC 9111 §4.4),
through both middlewares, on the memory store and a real Redis; and tag invalidation on
a real 3-node Redis Cluster."""

from __future__ import annotations

import pytest

from ratelimit_mw.cache import AsyncRedisCache, RedisCache
from tests.cache.harness import (
    ASGI,
    V1,
    AnyCache,
    Interface,
    Reply,
    Seen,
    numbered,
    settle,
    status_of,
    with_vary,
)
from tests.redis_topologies import HOST, PrivateCluster, redis_cluster

__all__ = ["redis_cluster"]  # the fixture, imported for pytest


def pointing(location: str | None, content_location: str | None = None,
             status: int = 201):
    """GETs are numbered; a POST answers *status* with the given headers."""
    def respond(seen: Seen, n: int) -> Reply:
        if seen.method != "POST":
            return numbered(seen, n)
        headers = {}
        if location is not None:
            headers["Location"] = location
        if content_location is not None:
            headers["Content-Location"] = content_location
        return Reply("done", status=status, headers=headers)

    return respond


async def bodies(c, urls: list[str]) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [(await c.get(url)).content for url in urls]


@pytest.mark.parametrize(("location", "content_location", "dropped"), [
    ("/items/2", None, {"/items/2"}),
    ("2", None, {"/items/2"}),                                     # relative to /items/1
    (None, "http://testserver/items/3", {"/items/3"}),
    ("/items/2", "/items/3?x=1", {"/items/2", "/items/3"}),          # any query of the path
    ("http://TestServer:80/items/2", None, {"/items/2"}),            # the same origin
    ("http://other.example/items/2", None, set()),                   # another host
    ("https://testserver/items/2", None, set()),                     # another scheme
    ("http://testserver:8080/items/2", None, set()),                 # another port
])
async def test_location_and_content_location_are_invalidated(
        interface: Interface, cache: AnyCache, location: str | None,
        content_location: str | None, dropped: set[str]) -> None:
    upstream, app = interface.cached(cache, pointing(location, content_location))
    urls = ["/items/2", "/items/3", "/items/3?x=1", "/items/4"]
    async with interface.client(app) as c:
        before = await bodies(c, urls)
        assert await bodies(c, urls) == before  # stored
        assert (await c.post("/items/1")).status_code == 201
        after = await bodies(c, urls)
    for url, old, new in zip(urls, before, after, strict=True):
        assert (old != new) is (url.split("?")[0] in dropped), url
    refetched = [url for url in urls if url.split("?")[0] in dropped]
    assert upstream.calls == len(urls) + 1 + len(refetched)  # GETs, the POST, refetches


async def test_a_failed_unsafe_request_drops_no_location(interface: Interface,
                                                         cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, pointing("/items/2", status=409))
    async with interface.client(app) as c:
        before = await bodies(c, ["/items/2"])
        await c.post("/items/1")
        assert await bodies(c, ["/items/2"]) == before
    assert upstream.calls == 2


async def test_a_percent_encoded_location_asgi(async_cache: AnyCache) -> None:
    """ASGI keys hold the raw path: the Location's path is matched as sent."""
    upstream, app = ASGI.cached(async_cache, pointing("/caf%C3%A9"))
    async with ASGI.client(app) as c:
        before = await bodies(c, ["/caf%C3%A9"])
        await c.post("/items/1")
        assert await bodies(c, ["/caf%C3%A9"]) != before
    assert upstream.calls == 3


# --- Redis Cluster ------------------------------------------------------------------------


def _cluster_cache(interface: Interface, cluster: PrivateCluster) -> AnyCache:
    nodes = [(HOST, port) for port in cluster.ports]
    if interface is ASGI:
        from redis.asyncio.cluster import ClusterNode as AsyncNode
        from redis.asyncio.cluster import RedisCluster as AsyncCluster
        return AsyncRedisCache(client=AsyncCluster(
            startup_nodes=[AsyncNode(h, p) for h, p in nodes]))
    from redis.cluster import ClusterNode, RedisCluster
    return RedisCache(client=RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes]))


async def _close_cluster_cache(cache: AnyCache) -> None:
    if isinstance(cache, AsyncRedisCache):
        await cache.client.aclose()
    elif isinstance(cache, RedisCache):
        cache.client.close()


@pytest.mark.redis
async def test_tag_invalidation_on_a_redis_cluster(interface: Interface,
                                                   redis_cluster: PrivateCluster) -> None:
    """Every key of a URI shares its hash tag, so the tag script runs in one slot: a POST
    drops every query and variant of the path on a real 3-node cluster, and nothing else."""
    redis_cluster.flushall()
    cache = _cluster_cache(interface, redis_cluster)
    try:
        upstream, app = interface.cached(cache, with_vary)
        requests = [(f"/items/{i}?q={q}", v) for i in range(8) for q in range(3)
                    for v in ("a", "b")]
        async with interface.client(app) as c:
            async def bodies_now() -> list[bytes]:
                return [(await c.get(url, headers={"X-Variant": v})).content
                        for url, v in requests]

            before = await bodies_now()
            assert await bodies_now() == before  # stored, all of them
            assert upstream.calls == len(requests)
            slots = {int(redis_cluster.execute("CLUSTER", "KEYSLOT", key))
                     for key in _cluster_keys(redis_cluster)}
            assert len(slots) > 1  # the paths are spread over the cluster
            assert (await c.post("/items/3")).status_code == 200
            after = await bodies_now()
            removed = await settle(app.invalidate("testserver", "/items/5"))
        changed = {url.split("?")[0] for (url, _), old, new
                   in zip(requests, before, after, strict=True) if old != new}
        assert changed == {"/items/3"}
        assert removed == 3 * (2 + 1)  # three queries: two variants and a record each
    finally:
        await _close_cluster_cache(cache)


def _cluster_keys(cluster: PrivateCluster) -> list[str]:
    keys: list[str] = []
    for port in cluster.ports:
        keys += [k.decode() if isinstance(k, bytes) else k
                 for k in cluster.execute("KEYS", "rlmw:cache:*", port=port)]
    return keys


@pytest.mark.redis
async def test_revalidation_and_stale_content_on_a_redis_cluster(
        interface: Interface, redis_cluster: PrivateCluster) -> None:
    """The rest of the cache on the same cluster: a 304 refresh, single-flight lock, and
    the stale entry when the app fails."""
    redis_cluster.flushall()
    cache = _cluster_cache(interface, redis_cluster)

    def respond(seen: Seen, n: int) -> Reply:
        headers = {"Cache-Control": "max-age=0, stale-if-error=60", "ETag": V1,
                   "X-Checked": str(n)}
        if n == 3:
            return Reply("down", status=503)
        if seen.headers.get("if-none-match") == V1:
            return Reply(b"", status=304, headers=headers)
        return Reply(f"body #{n}", headers=headers)

    try:
        upstream, app = interface.cached(cache, respond)
        async with interface.client(app) as c:
            first = await c.get("/r")
            refreshed = await c.get("/r")
            failed = await c.get("/r")
        assert [r.content for r in (first, refreshed, failed)] == [b"body #1"] * 3
        assert refreshed.headers["x-checked"] == "2"
        assert status_of(refreshed)["fwd-status"] == 304
        assert status_of(failed)["detail"] == "stale-if-error"
        assert upstream.calls == 3
    finally:
        await _close_cluster_cache(cache)
