"""ResponseCacheMiddleware's single flight, with concurrent asyncio requests through httpx,
on the memory store and a real Redis. Every other rule runs through both middlewares in
test_both_interfaces.py."""

from __future__ import annotations

import asyncio
import time

from ratelimit_mw._types import Message, Scope
from ratelimit_mw.cache import AsyncMemoryCache, AsyncRedisCache
from tests.cache.harness import (
    ASGI,
    V1,
    Reply,
    Seen,
    numbered,
    private,
    status_of,
    validated,
    with_vary,
)

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


async def test_an_unsafe_request_invalidates_before_its_last_message_goes_out(
        async_cache: AsyncCache) -> None:
    """Read your own writes: the message that completes a POST's answer reaches the
    server only once the URI's entries are gone."""
    upstream, app = ASGI.cached(async_cache, numbered)
    async with ASGI.client(app) as c:
        await c.get("/r")
        assert status_of(await c.get("/r")).get("hit") is True
    stored_at: dict[str, bool] = {}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            async with ASGI.client(app) as c:
                stored_at["last body"] = status_of(await c.get("/r")).get("hit") is True

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope: Scope = {"type": "http", "method": "POST", "path": "/r", "raw_path": b"/r",
                    "query_string": b"", "scheme": "http", "root_path": "",
                    "headers": [(b"host", b"testserver")], "http_version": "1.1"}
    await app(scope, receive, send)
    assert stored_at == {"last body": False}
    assert upstream.calls == 3  # GET, POST, and the GET after the drop


async def test_fifty_concurrent_revalidations_make_one_call(async_cache: AsyncCache) -> None:
    """A no-cache entry (revalidated on every use): 50 requests at once, one conditional
    request to the app; the others are served the refreshed entry."""
    respond, conditions = validated("no-cache")
    upstream, app = ASGI.cached(async_cache, respond, delay=0.1)
    async with ASGI.client(app) as c:
        await c.get("/hot")
        responses = await asyncio.gather(*(c.get("/hot") for _ in range(50)))
    assert upstream.calls == 2
    assert conditions == [{}, {"if-none-match": V1}]
    assert {r.content for r in responses} == {b"body #1"}
    assert {r.headers["x-checked"] for r in responses} == {"2"}
    assert sum(status_of(r).get("collapsed") is True for r in responses) == 49


async def test_fifty_requests_on_a_stale_while_revalidate_entry_make_one_call(
        async_cache: AsyncCache) -> None:
    """All 50 get the stale entry at once; one of them revalidates it afterwards."""
    def respond(seen: Seen, n: int) -> Reply:
        return Reply(f"#{n}", headers={"Cache-Control": "max-age=1, stale-while-revalidate=60"})

    upstream, app = ASGI.cached(async_cache, respond, delay=0.1)
    async with ASGI.client(app) as c:
        await c.get("/hot")
        await asyncio.sleep(1.1)
        responses = await asyncio.gather(*(c.get("/hot") for _ in range(50)))
        after = await c.get("/hot")
    assert upstream.calls == 2
    assert {r.content for r in responses} == {b"#1"}
    assert {status_of(r).get("detail") for r in responses} == {"stale-while-revalidate"}
    assert after.content == b"#2"
