"""The JSON stores against a real Redis (and the memory stores, where the behaviour is the
same): values, TTLs, locks, tags, SCAN deletes, construction, outages."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import pickle
import time
from typing import Any

import pytest
import redis
import redis.asyncio

from ratelimit_mw import AsyncRateLimiter, RateLimiter
from ratelimit_mw.cache import AsyncMemoryCache, AsyncRedisCache, MemoryCache, RedisCache
from ratelimit_mw.errors import ConfigurationError
from tests.redis_server import PrivateRedis

SyncCache = RedisCache | MemoryCache
AsyncCache = AsyncRedisCache | AsyncMemoryCache
VALUE = {"text": "héllo", "list": [1, 2.5, None, True, "x"], "nested": {"a": []}}


def raw_ttl(cache: SyncCache, name: str) -> float | None:
    """Seconds left on *name* in the store itself; ``None`` if it never expires."""
    if isinstance(cache, MemoryCache):
        until = cache._data[name][0]
        return None if until - time.monotonic() > 10**8 else until - time.monotonic()
    ms = cache.client.pttl(cache.key(name))
    return None if ms == -1 else ms / 1000


# --- values ----------------------------------------------------------------------------


def test_set_get_delete_json_with_ttl(sync_cache: SyncCache) -> None:
    assert sync_cache.get("k") is None
    assert sync_cache.set("k", VALUE, ttl=60) is True
    assert sync_cache.get("k") == VALUE
    ttl = raw_ttl(sync_cache, "k")
    assert ttl is not None
    assert 59 < ttl <= 60
    assert sync_cache.set("forever", [1]) is True
    assert raw_ttl(sync_cache, "forever") is None
    assert sync_cache.delete("k", "forever", "missing") == 2
    assert sync_cache.delete() == 0
    assert sync_cache.get("k") is None
    assert sync_cache.get("forever") is None


def test_redis_values_are_json_text_under_the_prefix(redis_client: redis.Redis,
                                                     redis_url: str) -> None:
    cache = RedisCache(redis_url, prefix="app:cache")
    bare = RedisCache(redis_url, prefix="")
    try:
        cache.set("k", VALUE, ttl=30)
        bare.set("k", [1], ttl=30)
        assert json.loads(redis_client.get("app:cache:k")) == VALUE
        assert redis_client.get("k") == b"[1]"
        assert cache.key("k") == "app:cache:k"
    finally:
        cache.close()
        bare.close()


def test_entries_expire(sync_cache: SyncCache) -> None:
    sync_cache.set("short", 1, ttl=1)
    sync_cache.set("long", 2, ttl=60)
    time.sleep(1.1)
    assert sync_cache.get("short") is None
    assert sync_cache.get("long") == 2


def test_values_are_never_pickled(sync_cache: SyncCache) -> None:
    with pytest.raises(TypeError):
        sync_cache.set("k", {1, 2})  # not JSON: refused, not pickled
    with pytest.raises(TypeError):
        sync_cache.set("k", object())
    assert sync_cache.get("k") is None


class Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pickle ran!",))


@pytest.mark.parametrize("garbage", [pickle.dumps(Boom()), pickle.dumps({"a": 1}),
                                     b"\xff\xfe not utf-8", b"{truncated", b""])
def test_garbage_in_redis_is_a_miss(redis_client: redis.Redis, redis_url: str,
                                    garbage: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    cache = RedisCache(redis_url)
    try:
        redis_client.set(cache.key("k"), garbage)
        assert cache.get("k") is None
        assert cache.connected  # a damaged value is not an outage
    finally:
        cache.close()
    assert "pickle ran" not in capsys.readouterr().out


async def test_async_set_get_delete_json_with_ttl(async_cache: AsyncCache) -> None:
    assert await async_cache.get("k") is None
    assert await async_cache.set("k", VALUE, ttl=60) is True
    assert await async_cache.get("k") == VALUE
    if isinstance(async_cache, AsyncRedisCache):
        assert 59_000 < await async_cache.client.pttl(async_cache.key("k")) <= 60_000
        await async_cache.client.set(async_cache.key("junk"), pickle.dumps(Boom()))
        assert await async_cache.get("junk") is None
    assert await async_cache.delete("k", "missing") == 1
    assert await async_cache.delete() == 0
    assert await async_cache.get("k") is None
    with pytest.raises(TypeError):
        await async_cache.set("k", {1})


def test_a_ttl_of_zero_stores_nothing_and_is_no_outage(
        sync_cache: SyncCache, caplog: pytest.LogCaptureFixture) -> None:
    """Already expired: nothing stored (an older value goes). Redis refuses EX 0; that
    must not count as an outage."""
    caplog.set_level(logging.WARNING, logger="ratelimit_mw.breaker")
    sync_cache.set("k", 1, 60)
    assert sync_cache.set("k", 2, ttl=0) is False
    assert sync_cache.get("k") is None
    assert sync_cache.lock("l", 0.0001) is not None  # PX 0 would be an error too
    assert sync_cache.connected
    assert sync_cache.set("k", 3, 60)
    assert sync_cache.get("k") == 3
    assert breaker_lines(caplog, "failed") == 0


async def test_async_ttl_of_zero_stores_nothing_and_is_no_outage(
        async_cache: AsyncCache, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ratelimit_mw.breaker")
    await async_cache.set("k", 1, 60)
    assert await async_cache.set("k", 2, ttl=0) is False
    assert await async_cache.get("k") is None
    assert await async_cache.lock("l", 0.0001) is not None
    assert async_cache.connected
    assert await async_cache.set("k", 3, 60)
    assert await async_cache.get("k") == 3
    assert breaker_lines(caplog, "failed") == 0


def test_memory_cache_is_bounded() -> None:
    cache = MemoryCache(max_entries=3)
    for name in "abcd":
        cache.set(name, name, ttl=60)
    assert [cache.get(n) for n in "abcd"] == [None, "b", "c", "d"]  # the oldest went
    assert len(cache._data) == 3


def test_async_memory_cache_wraps_one_memory_cache() -> None:
    shared = MemoryCache()
    assert AsyncMemoryCache(shared).sync is shared
    assert isinstance(AsyncMemoryCache().sync, MemoryCache)


# --- ping, connected -------------------------------------------------------------------


def test_ping_and_connected(sync_cache: SyncCache) -> None:
    assert sync_cache.ping() is True
    assert sync_cache.connected is True


async def test_async_ping_and_connected(async_cache: AsyncCache) -> None:
    assert await async_cache.ping() is True
    assert async_cache.connected is True


# --- locks -------------------------------------------------------------------------------


def test_lock_is_exclusive_and_token_checked(sync_cache: SyncCache) -> None:
    token = sync_cache.lock("l", 5)
    assert isinstance(token, str)
    assert token
    assert sync_cache.lock("l", 5) is None
    sync_cache.unlock("l", "not-the-token")
    assert sync_cache.lock("l", 5) is None  # a wrong token releases nothing
    sync_cache.unlock("l", token)
    second = sync_cache.lock("l", 5)
    assert second is not None
    assert second != token


def test_an_expired_lock_is_free_and_its_old_token_is_void(sync_cache: SyncCache) -> None:
    old = sync_cache.lock("l", 0.2)
    assert old is not None
    time.sleep(0.3)
    new = sync_cache.lock("l", 5)
    assert new is not None
    sync_cache.unlock("l", old)  # the first holder, late: must not free the new lock
    assert sync_cache.lock("l", 5) is None


async def test_async_lock_is_exclusive_and_token_checked(async_cache: AsyncCache) -> None:
    token = await async_cache.lock("l", 5)
    assert token is not None
    assert await async_cache.lock("l", 5) is None
    await async_cache.unlock("l", "wrong")
    assert await async_cache.lock("l", 5) is None
    await async_cache.unlock("l", token)
    assert await async_cache.lock("l", 5) is not None


# --- tags ----------------------------------------------------------------------------------


def test_tag_and_invalidate_tag(sync_cache: SyncCache) -> None:
    for name in "abc":
        sync_cache.set(name, name, ttl=60)
    sync_cache.tag("t", "a", 60)
    sync_cache.tag("t", "b", 60)
    sync_cache.tag("t", "b", 60)
    sync_cache.tag("t", "gone", 60)  # tagged, never stored
    assert sync_cache.invalidate_tag("t") == 2
    assert [sync_cache.get(n) for n in "abc"] == [None, None, "c"]
    assert sync_cache.invalidate_tag("t") == 0  # the tag went too
    assert sync_cache.invalidate_tag("never") == 0


def test_a_redis_tag_lives_as_long_as_its_longest_member(redis_client: redis.Redis,
                                                         redis_url: str) -> None:
    cache = RedisCache(redis_url)
    try:
        for ttl in (10, 100, 50):
            cache.tag("t", f"k{ttl}", ttl)
        assert 99 <= redis_client.ttl(cache.key("t")) <= 100
    finally:
        cache.close()


def test_expired_members_leave_their_tag(sync_cache: SyncCache) -> None:
    """A tag of a hot path must not grow for ever with the keys of expired entries."""
    for i in range(5):
        sync_cache.set(f"old{i}", i, ttl=1)  # the memory store lists stored keys only
        sync_cache.tag("t", f"old{i}", 1)
    time.sleep(1.1)
    sync_cache.set("new", 5, ttl=60)
    sync_cache.tag("t", "new", 60)
    if isinstance(sync_cache, MemoryCache):
        assert list(sync_cache._tags["t"]) == ["new"]
    else:
        members = sync_cache.client.zrange(sync_cache.key("t"), 0, -1)
        assert members == [sync_cache.key("new").encode()]


async def test_async_tag_and_invalidate_tag(async_cache: AsyncCache) -> None:
    for name in "abc":
        await async_cache.set(name, name, ttl=60)
    await async_cache.tag("t", "a", 60)
    await async_cache.tag("t", "b", 60)
    assert await async_cache.invalidate_tag("t") == 2
    assert [await async_cache.get(n) for n in "abc"] == [None, None, "c"]


# --- delete_prefix: SCAN, never KEYS ---------------------------------------------------------


def no_keys(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("KEYS must never be used")


def test_delete_prefix_scans(sync_cache: SyncCache, monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(sync_cache, RedisCache):
        monkeypatch.setattr(sync_cache.client, "keys", no_keys)
        pipe = sync_cache.client.pipeline()
        for i in range(1200):
            pipe.set(sync_cache.key(f"items/{i}"), "1")
        pipe.execute()
    else:
        for i in range(1200):
            sync_cache.set(f"items/{i}", 1)
    for name in ("item", "items", "other/items/1", "a*b", "axb", "Items/1"):
        sync_cache.set(name, 1)
    sync_cache.set("a*b/1", 1)
    assert sync_cache.delete_prefix("items/") == 1200
    assert sync_cache.get("items/0") is None
    assert sync_cache.get("items/1199") is None
    # Glob characters in the prefix are literal: "a*b" does not match "axb".
    assert sync_cache.delete_prefix("a*b") == 2
    left = ["item", "items", "other/items/1", "axb", "Items/1"]
    assert [sync_cache.get(n) for n in left] == [1] * len(left)
    if isinstance(sync_cache, RedisCache):
        assert sorted(k.decode() for k in sync_cache.client.scan_iter("*")) == sorted(
            sync_cache.key(n) for n in left)


async def test_async_delete_prefix_scans(async_cache: AsyncCache,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(async_cache, AsyncRedisCache):
        monkeypatch.setattr(async_cache.client, "keys", no_keys)
        pipe = async_cache.client.pipeline()
        for i in range(1200):
            pipe.set(async_cache.key(f"items/{i}"), "1")
        await pipe.execute()
    else:
        for i in range(1200):
            await async_cache.set(f"items/{i}", 1)
    for name in ("item", "other/items/1", "a?c", "abc"):
        await async_cache.set(name, 1)
    assert await async_cache.delete_prefix("items/") == 1200
    assert await async_cache.delete_prefix("a?") == 1
    assert [await async_cache.get(n) for n in ("item", "other/items/1", "abc", "items/5")] == [
        1, 1, 1, None]


# --- construction -------------------------------------------------------------------------------


def test_built_from_url_client_or_pool(redis_client: redis.Redis, redis_url: str) -> None:
    pool = redis.BlockingConnectionPool.from_url(redis_url)
    client = redis.Redis.from_url(redis_url)
    caches = [RedisCache(redis_url), RedisCache(client=client),
              RedisCache(connection_pool=pool)]
    try:
        caches[0].set("k", {"from": "url"}, 60)
        assert [c.get("k") for c in caches] == [{"from": "url"}] * 3
        assert caches[1].client is client
        assert caches[2].client.connection_pool is pool
        assert all(c.ping() for c in caches)
    finally:
        for cache in caches:
            cache.close()
    # A pool passed in is the owner's: the cache's close() left its connection open.
    assert any(c._sock is not None for c in pool._connections)
    pool.disconnect()
    client.close()


async def test_async_built_from_url_client_or_pool(redis_client: redis.Redis,
                                                   redis_url: str) -> None:
    pool = redis.asyncio.BlockingConnectionPool.from_url(redis_url)
    client = redis.asyncio.Redis.from_url(redis_url)
    caches = [AsyncRedisCache(redis_url), AsyncRedisCache(client=client),
              AsyncRedisCache(connection_pool=pool)]
    try:
        await caches[0].set("k", {"from": "url"}, 60)
        assert [await c.get("k") for c in caches] == [{"from": "url"}] * 3
        assert caches[1].client is client
        assert caches[2].client.connection_pool is pool
    finally:
        for cache in caches:
            await cache.aclose()
        await pool.disconnect()
        await client.aclose()


def test_close_releases_the_pool_it_built(redis_url: str) -> None:
    cache = RedisCache(redis_url)
    cache.set("k", 1, 5)
    pool = cache.client.connection_pool
    cache.close()
    assert pool._connections  # it did connect ...
    assert all(c._sock is None for c in pool._connections)  # ... and close() hung up
    del cache
    gc.collect()  # an unclosed socket would be a ResourceWarning, an error here


async def test_aclose_releases_the_pool_it_built(redis_url: str) -> None:
    cache = AsyncRedisCache(redis_url)
    await cache.set("k", 1, 5)
    await cache.aclose()
    del cache
    gc.collect()  # redis-py warns "unclosed Connection" if the pool was left open


def test_the_limiters_pool_is_shared(redis_client: redis.Redis, redis_url: str) -> None:
    limiter = RateLimiter(redis_url)
    pool = limiter.storage.get_connection().connection_pool
    cache = RedisCache(connection_pool=pool)
    try:
        assert cache.set("k", [1], 60)
        assert cache.get("k") == [1]
        assert cache.client.connection_pool is pool
        assert redis_client.get("rlmw:cache:k") == b"[1]"
    finally:
        cache.close()
        limiter.close()


async def test_the_async_limiters_pool_is_shared(redis_client: redis.Redis,
                                                 redis_url: str) -> None:
    limiter = AsyncRateLimiter(redis_url)
    pool = limiter.storage.bridge.get_connection().connection_pool
    cache = AsyncRedisCache(connection_pool=pool)
    try:
        assert await cache.set("k", [1], 60)
        assert await cache.get("k") == [1]
        assert cache.client.connection_pool is pool
    finally:
        await cache.aclose()
        await limiter.aclose()


@pytest.mark.parametrize("cls", [RedisCache, AsyncRedisCache])
def test_exactly_one_source(cls: type[RedisCache] | type[AsyncRedisCache],
                            redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    pool = redis.ConnectionPool.from_url(redis_url)
    try:
        for kwargs in ({}, {"url": redis_url, "client": client},
                       {"url": redis_url, "connection_pool": pool},
                       {"client": client, "connection_pool": pool},
                       {"url": redis_url, "client": client, "connection_pool": pool}):
            with pytest.raises(ConfigurationError, match="exactly one"):
                cls(**kwargs)
    finally:
        client.close()
        pool.disconnect()


@pytest.mark.parametrize("cls", [RedisCache, AsyncRedisCache])
@pytest.mark.parametrize("url", ["memcached://:s3cret@host:11211", "http://:s3cret@h/",
                                 "localhost:6379"])
def test_a_url_that_is_not_redis_is_refused(cls: type[RedisCache] | type[AsyncRedisCache],
                                            url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cls(url)
    assert "s3cret" not in str(raised.value)


# --- outages -------------------------------------------------------------------------------------


def breaker_lines(caplog: pytest.LogCaptureFixture, word: str) -> int:
    return len([r for r in caplog.records
                if r.name == "ratelimit_mw.breaker" and word in r.getMessage()])


def test_a_killed_redis_is_a_miss_everywhere(private_redis: PrivateRedis,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ratelimit_mw.breaker")
    cache = RedisCache(private_redis.url)
    try:
        assert cache.set("k", 1, 60)
        private_redis.kill()
        started = time.monotonic()
        for _ in range(3):
            assert cache.get("k") is None
            assert cache.set("k", 2, 60) is False
            assert cache.delete("k") == 0
            assert cache.lock("l", 5) is None
            assert cache.unlock("l", "t") is None
            assert cache.tag("t", "k", 60) is None
            assert cache.invalidate_tag("t") == 0
            assert cache.delete_prefix("k") == 0
            assert cache.ping() is False
            assert cache.connected is False
        assert time.monotonic() - started < 1.0
        assert breaker_lines(caplog, "failed") == 1
        assert "response cache" in caplog.records[0].getMessage()
        private_redis.start()
        time.sleep(0.6)
        assert cache.ping() is True
        assert cache.connected is True
        assert cache.get("k") is None  # a fresh server: the value is gone, not an error
        assert cache.set("k", 3, 60)
        assert cache.get("k") == 3
    finally:
        cache.close()
    assert breaker_lines(caplog, "answering again") == 1


async def test_a_killed_redis_is_a_miss_everywhere_async(
        private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ratelimit_mw.breaker")
    cache = AsyncRedisCache(private_redis.url)
    try:
        assert await cache.set("k", 1, 60)
        private_redis.kill()
        for _ in range(3):
            assert await cache.get("k") is None
            assert await cache.set("k", 2, 60) is False
            assert await cache.delete("k") == 0
            assert await cache.lock("l", 5) is None
            assert await cache.unlock("l", "t") is None
            assert await cache.tag("t", "k", 60) is None
            assert await cache.invalidate_tag("t") == 0
            assert await cache.delete_prefix("k") == 0
            assert await cache.ping() is False
            assert cache.connected is False
        assert breaker_lines(caplog, "failed") == 1
        private_redis.start()
        await asyncio.sleep(0.6)
        assert await cache.ping() is True
        assert cache.connected is True
        assert await cache.set("k", 3, 60)
        assert await cache.get("k") == 3
    finally:
        await cache.aclose()
    assert breaker_lines(caplog, "answering again") == 1


def test_a_paused_redis_costs_one_timeout(private_redis: PrivateRedis) -> None:
    cache = RedisCache(private_redis.url)
    try:
        assert cache.ping()
        private_redis.pause()
        started = time.monotonic()
        results = [cache.get("k") for _ in range(20)]
        elapsed = time.monotonic() - started
        private_redis.resume()
    finally:
        cache.close()
    assert results == [None] * 20
    assert elapsed < 1.5, elapsed  # one socket timeout (0.25 s), then the breaker
