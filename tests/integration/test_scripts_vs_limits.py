"""The one-round-trip scripts keep limits' key layout: limits reads and clears our keys,
and our numbers agree with its get_window_stats (for the strategies limits has). Memory
decides like Redis."""

from __future__ import annotations

import time

import pytest
import redis

from ratelimit_mw import RateLimiter, Rule
from ratelimit_mw._core import Policy
from ratelimit_mw._request import RequestInfo


def plan_for(limits: str, cost: int = 1):  # type: ignore[no-untyped-def]
    policy = Policy(rules=[Rule("/x", limits, cost=cost)])
    return policy.plan(RequestInfo("GET", "/x", client="203.0.113.7"))


@pytest.mark.parametrize("hits", [1, 4, 7])
def test_remaining_and_reset_agree_with_limits(redis_url: str, redis_client: redis.Redis,
                                               limits_strategy: str, hits: int) -> None:
    limiter = RateLimiter(redis_url, strategy=limits_strategy)  # type: ignore[arg-type]
    plan = plan_for("5/minute")
    decisions = [limiter.check(plan) for _ in range(hits)]
    ours = decisions[-1].quotas[0]
    item = plan.items[0]
    # limits computes a sliding window's reset as current_ttl % window, which is 0 in the
    # very millisecond a window opens (we report the window's end); step past it.
    time.sleep(0.01)
    stats = limiter.strategy.get_window_stats(item.limit, item.key)  # limits, same keys
    assert ours.remaining == stats.remaining
    assert abs(ours.reset_at - stats.reset_time) <= 1.0
    assert [d.allowed for d in decisions] == [i < 5 for i in range(hits)]
    limiter.close()


def test_limits_can_hit_test_and_clear_our_keys(redis_url: str, redis_client: redis.Redis,
                                                limits_strategy: str) -> None:
    limiter = RateLimiter(redis_url, strategy=limits_strategy)  # type: ignore[arg-type]
    plan = plan_for("5/minute")
    item = plan.items[0]
    for _ in range(3):
        limiter.check(plan)
    theirs = limiter.strategy  # limits' own strategy object on the same storage
    assert theirs.test(item.limit, item.key)
    assert theirs.hit(item.limit, item.key)
    assert theirs.hit(item.limit, item.key)
    assert not theirs.test(item.limit, item.key)  # 3 of ours + 2 of theirs = 5
    assert not limiter.check(plan).allowed
    theirs.clear(item.limit, item.key)
    # A clear behind our back is as another process's reset: this process repeats its
    # refusal until the refusal's retry_after, unless it forgets it (as a reset of ours
    # does).
    assert not limiter.check(plan).allowed
    assert limiter.denials is not None
    limiter.denials.clear()
    assert limiter.check(plan).quotas[0].remaining == 4
    limiter.close()


def test_several_limits_are_all_or_nothing(storage_url: str, strategy: str) -> None:
    limiter = RateLimiter(storage_url, strategy=strategy)  # type: ignore[arg-type]
    plan = plan_for("2/minute;5/hour")
    decisions = [limiter.check(plan) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, False, False]
    # The refusals consumed nothing: the hourly limit saw 2 requests, not 4.
    assert [q.remaining for q in decisions[-1].quotas] == [0, 3]
    assert decisions[-1].violated == ("/x-60s",)
    limiter.close()


def test_cost_larger_than_limit_is_refused_without_consuming(storage_url: str,
                                                              strategy: str) -> None:
    limiter = RateLimiter(storage_url, strategy=strategy)  # type: ignore[arg-type]
    big = limiter.check(plan_for("5/minute", cost=6))
    assert not big.allowed
    assert big.quotas[0].remaining == 5
    assert big.quotas[0].retry_after > 0
    assert limiter.check(plan_for("5/minute", cost=5)).allowed
    limiter.close()


def test_memory_and_redis_decide_alike(redis_url: str, redis_client: redis.Redis,
                                       strategy: str) -> None:
    results = {}
    for url in ("memory://", redis_url):
        limiter = RateLimiter(url, strategy=strategy)  # type: ignore[arg-type]
        seen = []
        for cost in (1, 2, 3, 1, 4, 1):
            decision = limiter.check(plan_for("3/second;6/minute", cost=cost))
            seen.append((decision.allowed, [q.remaining for q in decision.quotas],
                         [q.allowed for q in decision.quotas]))
        results[url] = seen
        limiter.close()
    assert results["memory://"] == results[redis_url]


def test_fixed_window_resets_after_expiry(storage_url: str) -> None:
    limiter = RateLimiter(storage_url, strategy="fixed-window")
    plan = plan_for("2/second")
    assert [limiter.check(plan).allowed for _ in range(3)] == [True, True, False]
    time.sleep(1.1)
    assert limiter.check(plan).allowed
    limiter.close()


def test_moving_window_frees_room_as_entries_age(storage_url: str) -> None:
    limiter = RateLimiter(storage_url, strategy="moving-window")
    plan = plan_for("2/second")
    assert limiter.check(plan).allowed
    time.sleep(0.6)
    assert limiter.check(plan).allowed
    refused = limiter.check(plan)
    assert not refused.allowed
    assert 0 < refused.quotas[0].retry_after <= 0.5
    time.sleep(refused.quotas[0].retry_after + 0.05)
    assert limiter.check(plan).allowed  # the first entry left; the second is still in
    assert not limiter.check(plan).allowed
    limiter.close()
