"""GCRA on a real Redis: the burst and the refill, its key layout, peek and reset, and
memory deciding like Redis for any history."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ratelimit_mw import AsyncRateLimiter, RateLimiter, Rule
from ratelimit_mw._core import Plan, PlanItem, Policy, item_key, storage_key
from ratelimit_mw._request import RequestInfo
from ratelimit_mw._rules import parse_limits
from ratelimit_mw._storage.memory import MemoryStore
from ratelimit_mw._strategies import KIND_NUMBERS, SCRIPT, STRATEGIES
from tests.redis_topologies import PrivateCluster, redis_cluster

pytestmark = pytest.mark.redis

__all__ = ["redis_cluster"]  # the fixture, re-exported for pytest

GCRA = STRATEGIES["gcra"]


def test_ten_per_second_is_a_burst_then_about_three_per_300_ms(redis_url: str,
                                                               redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_url, strategy="gcra")
    try:
        started = time.monotonic()
        burst = [limiter.hit("10/second", "u") for _ in range(11)]
        assert [q.allowed for q in burst] == [True] * 10 + [False]
        assert [q.remaining for q in burst] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]
        assert 0 < burst[-1].retry_after <= 0.1
        time.sleep(0.3)
        passed = sum(limiter.hit("10/second", "u").allowed for _ in range(6))
        # One request per 100 ms since the burst began: 3 after the 300 ms, more only as
        # far as this machine took longer than that.
        assert 3 <= passed <= int((time.monotonic() - started) * 10)
    finally:
        limiter.close()


def test_one_key_per_limit_holding_the_tat(redis_url: str, redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_url, strategy="gcra")
    try:
        before = redis_client.time()
        limiter.hit("3/second", "/login", "ip:203.0.113.7", cost=2)
        key = b"rlmw:gcra:rl/{%2Flogin/ip:203.0.113.7}/3/1/second"
        assert redis_client.keys("*") == [key]
        ms, fraction = redis_client.get(key).decode().split("+")  # type: ignore[union-attr]
        now_ms = before[0] * 1000 + before[1] // 1000
        # Two intervals of 333.33... ms past now: 666 ms and 2/3 of a millisecond.
        assert fraction == "2/3"
        assert 0 <= int(ms) - now_ms - 666 <= 50
        # The key lives until the TAT: then the bucket is full and the key means nothing.
        assert 0 < redis_client.pttl(key) <= 667
    finally:
        limiter.close()


def test_peek_and_reset_use_the_script_and_the_key(redis_url: str,
                                                   redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_url, strategy="gcra")
    try:
        assert limiter.strategy is None  # limits has no GCRA: the script reads the key
        for _ in range(3):
            limiter.hit("5/minute", "user:1")
        peeked = [limiter.peek("5/minute", "user:1") for _ in range(3)]
        assert [q.remaining for q in peeked] == [2, 2, 2]  # a peek consumes nothing
        assert all(q.allowed for q in peeked)
        assert 11 < peeked[0].reset_at - time.time() <= 12  # one interval frees room
        limiter.reset("5/minute", "user:1")
        assert redis_client.keys("*") == []
        assert limiter.peek("5/minute", "user:1").remaining == 5
    finally:
        limiter.close()


async def test_async_peek_and_reset(redis_url: str, redis_client: redis.Redis) -> None:
    limiter = AsyncRateLimiter(redis_url, strategy="gcra")
    try:
        assert (await limiter.hit("2/minute", "user:2", cost=2)).remaining == 0
        assert not (await limiter.peek("2/minute", "user:2")).allowed
        await limiter.reset("2/minute", "user:2")
        assert (await limiter.peek("2/minute", "user:2")).remaining == 2
    finally:
        await limiter.aclose()


def test_a_limits_storage_with_scripts_is_accepted(redis_url: str,
                                                   redis_client: redis.Redis) -> None:
    import limits.storage

    storage = limits.storage.storage_from_string(redis_url, key_prefix="rlmw:gcra")
    limiter = RateLimiter(storage, strategy="gcra")
    try:
        assert [limiter.hit("2/minute", "x").allowed for _ in range(3)] == [True, True, False]
    finally:
        limiter.close()


def _cluster_keys(cluster: PrivateCluster, pattern: str) -> dict[bytes, int]:
    """Every key matching *pattern* on the cluster's nodes, with its slot."""
    found = {}
    for host, port in cluster.nodes:
        node = redis.Redis(host=host, port=port)
        try:
            for key in node.scan_iter(match=pattern):
                found[key] = int(node.cluster("keyslot", key))
        finally:
            node.close()
    return found


def test_cluster_keys_carry_the_plan_hash_tag(redis_cluster: PrivateCluster) -> None:
    name = f"gcra-{uuid.uuid4().hex}"  # the session's cluster: counters of our own
    policy = Policy(rules=[Rule("/x", "10/second;100/minute;1000/hour", name=name)])
    plan = policy.plan(RequestInfo("GET", "/x", client="192.0.2.1"))
    assert plan is not None
    limiter = RateLimiter(redis_cluster.url, strategy="gcra")
    try:
        assert limiter.check(plan).allowed  # three limits, one script call
        assert limiter.check(plan).allowed
        keys = _cluster_keys(redis_cluster, f"rlmw:gcra:*{name}*")
        assert len(keys) == 3  # one per limit
        # Every key's slot is the slot of the plan's hash tag, {<rule>/<identity>}.
        tag = plan.items[0].key[1:-1]
        assert set(keys.values()) == {int(redis_cluster.execute("CLUSTER", "KEYSLOT", tag))}
        per_second = plan.items[0].limit
        assert limiter.peek(per_second, name, "ip:192.0.2.1").remaining == 8
        limiter.reset(per_second, name, "ip:192.0.2.1")
        assert limiter.peek(per_second, name, "ip:192.0.2.1").remaining == 10
        assert len(_cluster_keys(redis_cluster, f"rlmw:gcra:*{name}*")) == 2
    finally:
        limiter.close()


async def test_cluster_async_peek_and_reset(redis_cluster: PrivateCluster) -> None:
    identity = uuid.uuid4().hex
    limiter = AsyncRateLimiter(redis_cluster.url, strategy="gcra")
    try:
        assert [(await limiter.hit("3/minute", identity)).allowed for _ in range(4)] == [
            True, True, True, False]
        assert (await limiter.peek("3/minute", identity)).remaining == 0
        await limiter.reset("3/minute", identity)
        assert (await limiter.peek("3/minute", identity)).remaining == 3
    finally:
        await limiter.aclose()


# -- memory and Redis decide alike ---------------------------------------------------

# The one script with Redis's TIME replaced by two trailing arguments (seconds,
# microseconds), so a history can be replayed at chosen times. GCRA's state is the TAT
# alone; Redis's TTL only collects idle keys, so freezing TIME leaves nothing else
# depending on the real clock.
_TIME = "redis.call('TIME')"
_LIMITS = ["10/second", "3/second", "7/minute", "2/second;5/minute", "3/second;4/5 seconds"]


def _frozen_script() -> str:
    assert SCRIPT.count(_TIME) == 1
    return SCRIPT.replace(_TIME, "{ARGV[#ARGV - 1], ARGV[#ARGV]}")


_steps = st.lists(st.tuples(
    # ms since the previous request: often none or a few, so bursts and the ms around an
    # interval's end are tried, sometimes long enough for the bucket to refill
    st.one_of(st.integers(0, 3), st.integers(0, 400), st.integers(0, 1200)),
    st.one_of(st.integers(1, 2), st.integers(1, 11)),  # its cost
    st.booleans(),  # consume, or only peek
), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(limits=st.sampled_from(_LIMITS), steps=_steps, burst=st.sampled_from([0, 1, 3, 25]))
# 3/second: the last request would put the TAT 2/3 ms past a full bucket, and is refused
@example(limits="3/second", steps=[(0, 1, True)] * 3 + [(334, 1, True), (332, 1, True)], burst=0)
# 3/second: 333 ms on, the TAT is 1/3 ms ahead, in the same whole millisecond as now
@example(limits="3/second", steps=[(0, 1, True), (333, 3, True), (0, 2, True)], burst=0)
def test_memory_and_redis_give_the_same_integers(redis_url: str, limits: str,
                                                 steps: list[tuple[int, int, bool]],
                                                 burst: int) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        script = client.register_script(_frozen_script())
        items = parse_limits(limits, "test")
        key = storage_key("gcra-property", uuid.uuid4().hex)
        now = 1_800_000_000_000
        store = MemoryStore("gcra", lambda: now / 1000)
        for advance, cost, consume in steps:
            now += advance
            # The burst (0: the amount) rides in the item's option, as Rule(burst=) puts it.
            plan = Plan("r", key, tuple(PlanItem(i, key, cost, f"p{n}", option=burst)
                                        for n, i in enumerate(items)))
            keys = [k for item in plan.items
                    for k in GCRA.redis_keys("rlmw:gcra", item_key(item))]
            args: list[int | str] = [len(items), int(consume), 0, 0, ""]  # no penalty, lease
            for item in plan.items:
                args += [KIND_NUMBERS["gcra"], item.limit.amount, item.limit.get_expiry(),
                         cost, burst]
            args += [now // 1000, now % 1000 * 1000]
            # less the penalty's ms left and the decision's time
            on_redis = [int(v) for v in script(keys=keys, args=args)][:-2]
            in_memory = store._decide(plan, now, consume)
            assert on_redis == in_memory, (advance, cost, consume)
    finally:
        client.close()


def test_memory_and_redis_decide_a_policy_alike(redis_url: str,
                                                redis_client: redis.Redis) -> None:
    policy = Policy(rules=[Rule("/x", "3/minute;10/hour", cost=2)])
    plan = policy.plan(RequestInfo("GET", "/x", client="203.0.113.7"))
    assert plan is not None
    seen = {}
    for url in ("memory://", redis_url):
        limiter = RateLimiter(url, strategy="gcra")
        seen[url] = [[(q.allowed, q.remaining) for q in limiter.check(plan).quotas]
                     for _ in range(3)]
        limiter.close()
    assert seen["memory://"] == seen[redis_url] == [
        [(True, 1), (True, 8)], [(False, 1), (True, 8)], [(False, 1), (True, 8)]]
