"""The in-process store: expiry with a fake clock, and the cost that must not grow."""

from __future__ import annotations

import pytest

from ratelimit_mw._core import Plan, PlanItem, Policy, storage_key
from ratelimit_mw._request import RequestInfo
from ratelimit_mw._rules import Rule, parse_limits
from ratelimit_mw._storage.memory import MemoryStore
from ratelimit_mw._strategies.sliding_window import sliding_retry_ms


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def plan(identity: str, limits: str = "2/second", cost: int = 1) -> Plan:
    items = parse_limits(limits, "test")
    key = storage_key("r", identity)
    return Plan("r", identity, tuple(PlanItem(i, key, cost, f"p{n}")
                                     for n, i in enumerate(items)))


STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_expired_keys_are_released(strategy: str) -> None:
    clock = Clock()
    store = MemoryStore(strategy, clock)
    for n in range(1000):
        store.quotas(plan(f"client-{n}"))
    assert len(store) == 1000
    clock.now += 3  # two windows and a bit: every counter is over (sliding keeps 2)
    store.quotas(plan("late"))
    assert len(store) == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_key_still_in_use_is_kept(strategy: str) -> None:
    clock = Clock()
    store = MemoryStore(strategy, clock)
    for _ in range(6):
        clock.now += 0.5
        store.quotas(plan("busy", "100/second"))
    assert len(store) == 1
    quota = store.quotas(plan("busy", "100/second"), consume=False)[0]
    assert quota.remaining < 100  # the recent hits are still counted


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_window_semantics_with_a_fake_clock(strategy: str) -> None:
    clock = Clock()
    store = MemoryStore(strategy, clock)
    p = plan("c", "2/second")
    allowed = []
    for _ in range(3):
        allowed.append(store.quotas(p)[0].allowed)
    assert allowed == [True, True, False]
    clock.now += 2.01  # past any window and, for sliding, its decay
    assert store.quotas(p)[0].allowed


def test_moving_window_retry_is_exact() -> None:
    clock = Clock()
    store = MemoryStore("moving-window", clock)
    p = plan("c", "2/second")
    store.quotas(p)
    clock.now += 0.3
    store.quotas(p)
    refused = store.quotas(p)[0]
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.7, abs=0.002)


def test_peek_consumes_nothing() -> None:
    store = MemoryStore("fixed-window", Clock())
    for _ in range(5):
        store.quotas(plan("c"), consume=False)
    assert store.quotas(plan("c"))[0].remaining == 1


def test_policy_plans_work_in_the_store() -> None:
    policy = Policy(rules=[Rule("/x", "1/minute")])
    p = policy.plan(RequestInfo("GET", "/x", client="203.0.113.7"))
    assert p is not None
    store = MemoryStore("fixed-window", Clock())
    assert store.quotas(p)[0].allowed == 1
    assert store.quotas(p)[0].allowed == 0


@pytest.mark.parametrize(("args", "expected"), [
    # amount, cost, window, previous, previous_ttl, current, current_ttl
    ((5, 1, 60_000, 0, 0, 5, 120_000), 60_001),  # roll over; floor(5 * 59.999/60) = 4 fits
    ((3, 1, 60_000, 0, 0, 3, 100_000), 40_001),
    ((5, 1, 60_000, 10, 30_000, 0, 90_000), 1),  # floor(10 * 29.999/60) = 4 fits at once
    ((5, 1, 60_000, 10, 45_000, 0, 90_000), 15_001),
    ((5, 6, 60_000, 0, 0, 0, 0), 60_000),        # never fits: a whole window
    ((5, 2, 60_000, 8, 60_000, 2, 70_000), 10_000),  # the rollover comes first
])
def test_sliding_retry(args: tuple[int, ...], expected: float) -> None:
    assert sliding_retry_ms(*args) == pytest.approx(expected)


@pytest.mark.parametrize("strategy", ["sliding-window-counter"])
def test_sliding_retry_is_when_a_request_fits(strategy: str) -> None:
    # The wait the store reports is right: one ms before it, refused; at it, allowed.
    clock = Clock()
    store = MemoryStore(strategy, clock)
    p = plan("c", "5/minute")
    for _ in range(5):
        store.quotas(p)
    clock.now += 20
    refused = store.quotas(p)[0]
    assert not refused.allowed
    wait = refused.retry_after
    clock.now += wait - 0.002
    assert not store.quotas(p, consume=False)[0].allowed
    clock.now += 0.003  # the store counts whole ms: allow the clock's float rounding
    assert store.quotas(p, consume=False)[0].allowed
