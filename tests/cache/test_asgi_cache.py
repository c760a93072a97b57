"""ResponseCacheMiddleware's single flight, with concurrent asyncio requests through httpx,
on the memory store and a real Redis. Every other rule runs through both middlewares in
test_both_interfaces.py."""

from __future__ import annotations

import asyncio
import time

from ratelimit_mw.cache import AsyncMemoryCache, AsyncRedisCache
from tests.cache.harness import ASGI, numbered, private, status_of, with_vary

AsyncCache = AsyncRedisCache | AsyncMemoryCache


async def test_fifty_concurrent_misses_make_one_call(async_cache: AsyncCache) -> None:
    upstream, app = ASGI.cached(async_cache, numbered, delay=0.1)
    async with ASGI.client(app) as c:
        responses = await asyncio.gather(*(c.get("/hot") for _ in range(50)))
    assert upstream.calls == 1
    assert {r.content for r in responses} == {b"GET /hot? #1"}
    assert [r.status_code for r in responses] == [200] * 50
    assert sum(status_of(r).get("collapsed") is True for r in responses) == 49


async def test_concurrent_variants_are_never_shared(async_cache: AsyncCache) -> None:
    upstream, app = ASGI.cached(async_cache, with_vary, delay=0.1)
    async with ASGI.client(app) as c:
        variants = ["a", "b"] * 25
        responses = await asyncio.gather(*(c.get("/v", headers={"X-Variant": v})
                                           for v in variants))
    assert upstream.calls == 2
    for variant, response in zip(variants, responses, strict=True):
        assert response.content.startswith(f"/v? {variant} #".encode())
    assert len({r.content for r in responses}) == 2


async def test_a_head_miss_does_not_hold_the_lock(async_cache: AsyncCache) -> None:
    """A HEAD cannot fill the cache, so it neither takes nor waits for the lock: the GETs
    arriving while it runs still make exactly one call."""
    upstream, app = ASGI.cached(async_cache, numbered, delay=0.1)
    async with ASGI.client(app) as c:
        head = asyncio.ensure_future(c.head("/hot"))
        await asyncio.sleep(0.02)
        gets = await asyncio.gather(*(c.get("/hot") for _ in range(20)))
        await head
    assert upstream.calls == 2  # the HEAD, and one GET for all twenty
    assert {r.content for r in gets} == {b"GET /hot? #2"}


async def test_concurrent_private_responses_are_never_shared(async_cache: AsyncCache) -> None:
    """Every waiter for a private response calls the app itself, side by side (not one
    after another), and gets only its own body."""
    upstream, app = ASGI.cached(async_cache, private, delay=0.1)
    users = [f"user{i}" for i in range(30)]
    started = time.monotonic()
    async with ASGI.client(app) as c:
        responses = await asyncio.gather(*(c.get("/me", headers={"X-User": u})
                                           for u in users))
    elapsed = time.monotonic() - started
    assert upstream.calls == 30
    assert [r.content for r in responses] == [f"secret of {u}".encode() for u in users]
    assert elapsed < 2.0, f"waiters were served one after another: {elapsed:.2f}s"
