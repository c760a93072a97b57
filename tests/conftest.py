"""Shared fixtures: a real Redis, and the memory/redis storage matrix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import PrivateRedis, find_redis


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


STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis of this test's own, to stop, pause or misconfigure."""
    server = PrivateRedis()
    yield server
    server.stop()
