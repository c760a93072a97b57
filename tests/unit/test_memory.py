"""The in-process store: expiry with a fake clock, and the cost that must not grow."""

from __future__ import annotations

import itertools

import pytest

from ratelimit_mw import RateLimiter
from ratelimit_mw._core import Plan, PlanItem, Policy, storage_key
from ratelimit_mw._request import RequestInfo
from ratelimit_mw._rules import Rule, parse_limits
from ratelimit_mw._storage.memory import DEFAULT_MAX_KEYS, EXPIRE_BATCH, MemoryStore
from ratelimit_mw._strategies import STRATEGIES as REGISTRY
from ratelimit_mw._strategies.sliding_window import sliding_retry_ms
from ratelimit_mw.config import Settings
from ratelimit_mw.errors import ConfigurationError


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


STRATEGIES = list(REGISTRY)


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


# -- bounded under attack: the key cap and the expiry batch ------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_past_the_cap_new_identities_share_one_stricter_counter(strategy: str) -> None:
    store = MemoryStore(strategy, Clock(), max_keys=100)
    admitted: dict[str, int] = {}
    for n in range(1000):
        identity = f"client-{n}"
        admitted[identity] = sum(store.quotas(plan(identity, "5/minute"))[0].allowed
                                 for _ in range(10))
    # The first 100 identities have counters of their own: exactly the limit each.
    assert [admitted[f"client-{n}"] for n in range(100)] == [5] * 100
    # The 900 after the cap share one overflow counter: 5 between them, never more.
    assert sum(admitted[f"client-{n}"] for n in range(100, 1000)) == 5
    assert len(store) == 101  # the cap, and one overflow counter for the one limit


def test_a_million_identities_stay_under_the_cap() -> None:
    store = MemoryStore("fixed-window", Clock(), max_keys=10_000)
    items = parse_limits("5/minute", "test")
    for n in range(1_000_000):
        key = storage_key("r", f"client-{n}")
        store.quotas(Plan("r", "c", (PlanItem(items[0], key, 1, "p"),)))
    assert len(store) == 10_001


def test_a_full_store_expires_before_it_overflows() -> None:
    clock = Clock()
    store = MemoryStore("fixed-window", clock, max_keys=10)
    for n in range(10):
        store.quotas(plan(f"old-{n}", "1/second"))
    clock.now += 2.5  # every old counter is due for dropping, none dropped yet
    assert store.quotas(plan("new", "1/second"))[0].allowed
    assert store.quotas(plan("newer", "1/second"))[0].allowed  # its own, not the overflow
    assert len(store) == 2


def test_expiry_drops_a_bounded_batch_per_check() -> None:
    clock = Clock()
    store = MemoryStore("fixed-window", clock, max_keys=1_000_000)
    keys = 10 * EXPIRE_BATCH + 7
    for n in range(keys):
        store.quotas(plan(f"client-{n}", "1/second"))
    assert len(store) == keys
    clock.now += 2  # all of them are due in the same second
    sizes = [len(store)]
    while len(store) > 1:
        store.quotas(plan("probe", "1/second"))
        sizes.append(len(store))
    drops = [before - after for before, after in itertools.pairwise(sizes)]
    assert max(drops) <= EXPIRE_BATCH  # no check pays for more than one batch
    assert len(drops) >= keys // EXPIRE_BATCH


def test_max_keys_from_the_url_and_checked_at_configuration() -> None:
    assert RateLimiter("memory://?max_keys=25").memory.max_keys == 25  # type: ignore[union-attr]
    assert RateLimiter("memory://").memory.max_keys == DEFAULT_MAX_KEYS  # type: ignore[union-attr]
    for url in ("memory://?max_keys=0", "memory://?max_keys=lots", "memory://?size=5"):
        with pytest.raises(ConfigurationError, match="max_keys"):
            Settings(storage=url)
    with pytest.raises(ConfigurationError, match="max_keys"):
        MemoryStore("fixed-window", max_keys=0)
