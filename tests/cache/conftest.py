"""Cache fixtures: each test that takes one runs on the memory store and on a real Redis
(and, with `interface`, through the ASGI and the WSGI middleware)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from ratelimit_mw import RedisOptions
from ratelimit_mw.cache import AsyncMemoryCache, AsyncRedisCache, MemoryCache, RedisCache
from tests.cache.harness import INTERFACES, AnyCache, Interface

STORES = ["memory", pytest.param("redis", marks=pytest.mark.redis)]

# These fixtures test the cache's rules, not its timeouts (tests on private servers do):
# on a loaded machine 50 concurrent connects can take longer than the 0.25 s default,
# and a cache that skips Redis then counts as a failed single-flight test.
PATIENT = RedisOptions(socket_timeout=10, socket_connect_timeout=10, pool_timeout=10)


@pytest.fixture(params=STORES)
async def async_cache(request: pytest.FixtureRequest,
                      ) -> AsyncIterator[AsyncRedisCache | AsyncMemoryCache]:
    """The store of the ASGI middleware: ``AsyncMemoryCache()`` or ``AsyncRedisCache``."""
    if request.param == "memory":
        yield AsyncMemoryCache()
        return
    request.getfixturevalue("redis_client")  # a flushed db 13, flushed again afterwards
    cache = AsyncRedisCache(str(request.getfixturevalue("redis_url")), redis_options=PATIENT)
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
    cache = RedisCache(str(request.getfixturevalue("redis_url")), redis_options=PATIENT)
    try:
        yield cache
    finally:
        cache.close()


@pytest.fixture(params=INTERFACES, ids=str)
def interface(request: pytest.FixtureRequest) -> Interface:
    """Each test that takes this runs through the ASGI and through the WSGI middleware."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=STORES)
async def cache(request: pytest.FixtureRequest, interface: Interface) -> AsyncIterator[AnyCache]:
    """The store of *interface*'s middleware: its memory cache, or its Redis cache."""
    if request.param == "memory":
        yield interface.memory_cache()
        return
    request.getfixturevalue("redis_client")
    store = interface.redis_cache(str(request.getfixturevalue("redis_url")),
                                  redis_options=PATIENT)
    try:
        yield store
    finally:
        await interface.close(store)
