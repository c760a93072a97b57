"""GCRA in memory with a frozen clock: the burst, the refill, costs, exact times."""

from __future__ import annotations

import pytest

from ratelimit_mw import RateLimiter
from ratelimit_mw._core import Plan, PlanItem, storage_key
from ratelimit_mw._rules import parse_limits
from ratelimit_mw._storage.memory import MemoryStore
from ratelimit_mw.errors import ConfigurationError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def plan(limits: str = "10/second", cost: int = 1, identity: str = "c") -> Plan:
    items = parse_limits(limits, "test")
    key = storage_key("r", identity)
    return Plan("r", identity, tuple(PlanItem(i, key, cost, f"p{n}")
                                     for n, i in enumerate(items)))


def test_ten_per_second_is_a_burst_of_ten_then_one_per_100_ms() -> None:
    clock = Clock()
    store = MemoryStore("gcra", clock)
    burst = [store.quotas(plan())[0] for _ in range(11)]
    assert [q.allowed for q in burst] == [True] * 10 + [False]
    assert [q.remaining for q in burst] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]
    assert burst[-1].retry_after == pytest.approx(0.1)
    assert burst[-1].reset_at == pytest.approx(clock.now + 0.1)  # room for one more
    clock.now += 0.3
    after = [store.quotas(plan())[0].allowed for _ in range(4)]
    assert after == [True, True, True, False]


def test_retry_after_is_exact_to_the_millisecond() -> None:
    clock = Clock()
    store = MemoryStore("gcra", clock)
    for _ in range(10):
        store.quotas(plan())
    clock.now += 0.042
    refused = store.quotas(plan())[0]
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.058)
    clock.now += 0.057
    assert not store.quotas(plan(), consume=False)[0].allowed
    clock.now += 0.001
    assert store.quotas(plan())[0].allowed


def test_cost_consumes_that_many_intervals() -> None:
    clock = Clock()
    store = MemoryStore("gcra", clock)
    assert store.quotas(plan(cost=7))[0].remaining == 3
    refused = store.quotas(plan(cost=4))[0]
    assert not refused.allowed
    assert refused.remaining == 3  # a refusal consumes nothing
    assert refused.retry_after == pytest.approx(0.1)  # one interval frees the 4th
    big = store.quotas(plan(cost=11))[0]  # more than the bucket holds: never fits
    assert not big.allowed
    assert big.retry_after == pytest.approx(1.0)
    assert store.quotas(plan(cost=3))[0].remaining == 0


def test_an_interval_that_is_not_whole_milliseconds_does_not_drift() -> None:
    # 3/second: T = 333.33... ms. Hitting at every retry time for 100 s admits the burst
    # of 3 and then exactly 3 per second: rounding T to whole ms would gain or lose one
    # request every few hundred.
    clock = Clock()
    store = MemoryStore("gcra", clock)
    start = clock.now
    admitted = 0
    while clock.now < start + 100:
        quota = store.quotas(plan("3/second"))[0]
        if quota.allowed:
            admitted += 1
        else:
            clock.now += quota.retry_after
    assert admitted == 3 + 300 - 1  # the 300th interval's request falls at start + 100


def test_remaining_and_reset_with_a_fractional_interval() -> None:
    clock = Clock()
    store = MemoryStore("gcra", clock)
    quota = store.quotas(plan("3/second", cost=2))[0]
    assert quota.remaining == 1
    # One more request fits once the TAT is one interval from a full burst: 333.33 ms,
    # reported rounded up to the millisecond.
    assert quota.reset_at - clock.now == pytest.approx(0.334)
    clock.now += 0.333
    assert store.quotas(plan("3/second"), consume=False)[0].remaining == 1
    clock.now += 0.001
    assert store.quotas(plan("3/second"), consume=False)[0].remaining == 2


def test_a_full_bucket_resets_now_and_its_entry_expires() -> None:
    clock = Clock()
    store = MemoryStore("gcra", clock)
    fresh = store.quotas(plan(), consume=False)[0]
    assert (fresh.remaining, fresh.reset_at) == (10, clock.now)
    store.quotas(plan())
    assert len(store) == 1
    clock.now += 2  # the TAT has passed: the bucket is full, the entry means nothing
    store.quotas(plan(identity="other"))
    assert len(store) == 1


def test_all_or_nothing_across_limits() -> None:
    store = MemoryStore("gcra", Clock())
    decisions = [store.quotas(plan("2/second;3/minute")) for _ in range(3)]
    assert [[q.allowed for q in d] for d in decisions] == [
        [True, True], [True, True], [False, True]]
    assert decisions[-1][1].remaining == 1  # the refusal consumed nothing of the minute


def test_limits_storages_without_scripts_refuse_gcra() -> None:
    import limits.storage

    with pytest.raises(ConfigurationError, match=r"strategy='gcra' needs memory:// or Redis"
                                                 r".*MemoryStorage"):
        RateLimiter(limits.storage.MemoryStorage(), strategy="gcra")


def test_a_fraction_of_a_millisecond_past_the_burst_is_refused() -> None:
    # 3/second, T = 333.33... ms. Four requests leave the TAT at +1333.33 ms; 666 ms on,
    # a fifth would put it 1000.67 ms ahead: 2/3 ms more than the bucket holds.
    clock = Clock()
    store = MemoryStore("gcra", clock)
    assert all(store.quotas(plan("3/second"))[0].allowed for _ in range(3))
    clock.now += 0.334
    assert store.quotas(plan("3/second"))[0].allowed
    clock.now += 0.332
    refused = store.quotas(plan("3/second"))[0]
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.001)  # 2/3 ms, rounded up
    clock.now += 0.001
    assert store.quotas(plan("3/second"))[0].allowed


def test_a_tat_a_fraction_ahead_within_the_same_millisecond_still_counts() -> None:
    # 3/second: one request leaves the TAT at +333.33 ms. At +333 ms it is 1/3 ms ahead,
    # so a request of cost 3 would end 1/3 ms past a full bucket: refused.
    clock = Clock()
    store = MemoryStore("gcra", clock)
    store.quotas(plan("3/second"))
    clock.now += 0.333
    refused = store.quotas(plan("3/second", cost=3))[0]
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.001)
    assert refused.remaining == 2
