"""Cache fixtures: each test that takes one runs on the memory store and on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from ratelimit_mw.cache import AsyncMemoryCache, AsyncRedisCache, MemoryCache, RedisCache

STORES = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=STORES)
async def async_cache(request: pytest.FixtureRequest,
                      ) -> AsyncIterator[AsyncRedisCache | AsyncMemoryCache]:
    """The store of the ASGI middleware: ``AsyncMemoryCache()`` or ``AsyncRedisCache``."""
    if request.param == "memory":
        yield AsyncMemoryCache()
        return
    request.getfixturevalue("redis_client")  # a flushed db 13, flushed again afterwards
    cache = AsyncRedisCache(str(request.getfixturevalue("redis_url")))
    try:
        yield cache
    finally:
        await cache.aclose()


@pytest.fixture(params=STORES)
def sync_cache(request: pytest.FixtureRequest) -> Iterator[RedisCache | MemoryCache]:
    """The store of the WSGI middleware: ``MemoryCache()`` or ``RedisCache``."""
    if request.param == "memory":
        yield MemoryCache()
        return
    request.getfixturevalue("redis_client")
    cache = RedisCache(str(request.getfixturevalue("redis_url")))
    try:
        yield cache
    finally:
        cache.close()
