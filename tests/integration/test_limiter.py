"""RateLimiter / AsyncRateLimiter against memory and a real Redis, every strategy."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from ratelimit_mw import AsyncRateLimiter, ConfigurationError, RateLimiter, StorageError
from ratelimit_mw._storage.limiter import RedisOptions, mask_url
from tests.helpers import PATIENT, closed_port_url


def test_sync_hit_peek_reset(storage_url: str, strategy: str) -> None:
    limiter = RateLimiter(storage_url, strategy=strategy)
    try:
        quotas = [limiter.hit("3/minute", "user:42") for _ in range(4)]
        assert [q.allowed for q in quotas] == [True, True, True, False]
        assert [q.remaining for q in quotas] == [2, 1, 0, 0]
        refused = quotas[-1]
        # sliding: 60 s until the window rolls over, then 20 s for its weight to decay
        assert 0 < refused.retry_after <= (80 if strategy == "sliding-window-counter" else 60)
        assert refused.reset_at >= time.time()
        assert limiter.peek("3/minute", "user:42").remaining == 0
        assert limiter.hit("3/minute", "user:43").allowed  # another identity
        limiter.reset("3/minute", "user:42")
        assert limiter.peek("3/minute", "user:42").remaining == 3
        assert limiter.hit("3/minute", "user:42").allowed
        assert limiter.ping() is True
    finally:
        limiter.close()


async def test_async_hit_peek_reset(storage_url: str, strategy: str) -> None:
    limiter = AsyncRateLimiter(storage_url, strategy=strategy)
    try:
        quotas = [await limiter.hit("2/minute", "user:42", cost=1) for _ in range(3)]
        assert [q.allowed for q in quotas] == [True, True, False]
        assert (await limiter.peek("2/minute", "user:42")).allowed is False
        await limiter.reset("2/minute", "user:42")
        assert (await limiter.peek("2/minute", "user:42")).remaining == 2
        assert await limiter.ping() is True
    finally:
        await limiter.aclose()


def test_cost_consumes_several(storage_url: str, strategy: str) -> None:
    limiter = RateLimiter(storage_url, strategy=strategy)
    assert limiter.hit("10/minute", "job", cost=7).remaining == 3
    assert not limiter.hit("10/minute", "job", cost=4).allowed
    # A refused hit consumes nothing, whatever the strategy (limits' own fixed window
    # would have counted the refused 4 and refused this one too).
    third = limiter.hit("10/minute", "job", cost=3)
    assert third.allowed
    assert third.remaining == 0
    limiter.close()


def test_identifiers_cannot_collide(storage_url: str) -> None:
    limiter = RateLimiter(storage_url)
    assert limiter.hit("1/minute", "a/b", "c").allowed
    # limits joins parts with a bare '/': unescaped, this would share the counter above.
    assert limiter.hit("1/minute", "a", "b/c").allowed
    assert not limiter.hit("1/minute", "a/b", "c").allowed
    limiter.close()


def test_redis_keys_follow_layout(redis_url: str, redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_url, strategy="fixed-window")
    limiter.hit("5/minute", "/login", "ip:203.0.113.7")
    assert redis_client.keys("*") == [b"rlmw:fixed-window:rl/{%2Flogin/ip:203.0.113.7}/5/1/minute"]
    assert redis_client.ttl(redis_client.keys("*")[0]) > 0  # counters expire
    limiter.close()


def test_switching_strategy_never_meets_other_keys(redis_url: str,
                                                   redis_client: redis.Redis) -> None:
    for strategy in ("fixed-window", "moving-window", "sliding-window-counter", "gcra"):
        limiter = RateLimiter(redis_url, strategy=strategy)  # type: ignore[arg-type]
        assert limiter.hit("5/minute", "same").remaining == 4, strategy
        limiter.close()


def test_bad_configuration_is_explained() -> None:
    with pytest.raises(ConfigurationError, match="unknown scheme 'mysql'"):
        RateLimiter("mysql://localhost")
    with pytest.raises(ConfigurationError, match="strategy='token-bucket'"):
        RateLimiter("memory://", strategy="token-bucket")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a rate limit"):
        RateLimiter("memory://").hit("ten per minute", "x")
    with pytest.raises(ConfigurationError, match="cost"):
        RateLimiter("memory://").hit("1/minute", "x", cost=0)
    with pytest.raises(ConfigurationError, match="identifier"):
        RateLimiter("memory://").hit("1/minute")
    with pytest.raises(ConfigurationError, match="socket_timeout"):
        RedisOptions(socket_timeout=0)
    with pytest.raises(ConfigurationError, match="AsyncRateLimiter"):
        RateLimiter(AsyncRateLimiter("memory://").storage)


def test_storage_none_reads_redis_url(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert RateLimiter(None).url == redis_url
    monkeypatch.delenv("REDIS_URL")
    assert RateLimiter(None).url == "memory://"


def test_mask_url_hides_password() -> None:
    assert mask_url("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert mask_url("redis://host:6379") == "redis://host:6379"


def test_sync_storage_down_raises_storage_error_fast() -> None:
    limiter = RateLimiter(closed_port_url())
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"127\.0\.0\.1"):
        limiter.hit("1/minute", "x")
    assert time.monotonic() - started < 2
    assert limiter.ping() is False


async def test_async_storage_down_raises_storage_error() -> None:
    limiter = AsyncRateLimiter(closed_port_url())
    with pytest.raises(StorageError):
        await limiter.hit("1/minute", "x")
    await limiter.aclose()


async def test_concurrent_async_hits_are_exact(redis_url: str, redis_client: redis.Redis,
                                               strategy: str) -> None:
    limiter = AsyncRateLimiter(redis_url, strategy=strategy,  # type: ignore[arg-type]
                               redis_options=PATIENT)
    results = await asyncio.gather(*(limiter.hit("50/minute", "burst") for _ in range(120)))
    assert sum(q.allowed for q in results) == 50
    await limiter.aclose()
