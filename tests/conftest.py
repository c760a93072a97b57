"""Shared fixtures: a real Redis, and the memory/redis storage matrix."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import redis

from ratelimit_mw._strategies import STRATEGIES as REGISTRY
from tests.redis_server import PrivateRedis, find_redis


@pytest.fixture(scope="module", autouse=True)
def _disconnect_dropped_pools() -> Iterator[None]:
    """Disconnect the sync redis-py pools a test module left behind.

    redis-py 8 links a pool, its connections and their maintenance-notification handlers
    in reference cycles. A client dropped without ``close()`` (the docs' examples, like
    most apps, never close theirs) leaves that cycle to the garbage collector, which may
    finalize a connection's socket before the connection that would close it: an
    "unclosed socket" ResourceWarning at a later, unrelated moment, often in the final
    collection after the last test, where it fails the run and names no test.
    Disconnecting the module's new pools makes the release deterministic. Only sync
    pools: an asyncio pool belongs to its (closed) loop, and those tests close theirs.
    """
    before = sync_pools()  # held until the end, so no id in it is reused meanwhile
    yield
    disconnect_new_pools(before)


def sync_pools() -> list[redis.ConnectionPool]:
    """Every sync redis-py pool alive, or dropped but not yet collected."""
    return [o for o in gc.get_objects() if isinstance(o, redis.ConnectionPool)]


def disconnect_new_pools(before: list[redis.ConnectionPool]) -> None:
    """Disconnect the pools made since *before* (a `sync_pools` result)."""
    old = {id(pool) for pool in before}
    for pool in sync_pools():
        if id(pool) not in old:
            pool.disconnect()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis db owned by the tests (FLUSHDB'd per test that uses it)."""
    url, server = find_redis()
    try:
        yield url
    finally:
        if server is not None:
            server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def storage_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs on memory and on a real Redis."""
    if request.param == "memory":
        return "memory://"
    request.getfixturevalue("redis_client")  # a clean db for this test
    return str(request.getfixturevalue("redis_url"))


#: Every strategy of the registry; those ``limits`` also has a class for (it can read and
#: clear their keys), for the tests that compare with ``limits``.
STRATEGIES = list(REGISTRY)
LIMITS_STRATEGIES = [name for name, spec in REGISTRY.items() if spec.limits_class]


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=LIMITS_STRATEGIES)
def limits_strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis of this test's own, to stop, pause or misconfigure."""
    server = PrivateRedis()
    yield server
    server.stop()
