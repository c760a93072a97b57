"""Settling a reservation in memory, every strategy, on a frozen clock: a refund gives back
only what the reservation still holds (never a later window's room, never below zero), a
debt is charged, and the response view reads its headers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ratelimit_mw import ResponseInfo, Rule
from ratelimit_mw._core import Plan, Policy, RequestInfo
from ratelimit_mw._response import settle_deltas
from ratelimit_mw._storage.memory import MemoryStore

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter", "gcra"]


class Clock:
    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> float:
        return self.ms / 1000


def plan(limits: str = "2/second", **options: object) -> Plan:
    options.setdefault("count_when", lambda response: response.status >= 400)
    found = Policy(rules=[Rule("/x", limits, **options)]).plan(  # type: ignore[arg-type]
        RequestInfo("GET", "/x", client="203.0.113.7"))
    assert found is not None
    return found


def store(strategy: str) -> tuple[MemoryStore, Clock, Callable[[Plan], int]]:
    clock = Clock()
    memory = MemoryStore(strategy, clock)

    def left(p: Plan) -> int:
        return memory.quotas(p, consume=False)[0].remaining

    return memory, clock, left


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_refund_gives_back_the_reservation(strategy: str) -> None:
    memory, clock, left = store(strategy)
    p = plan()
    token = memory.decision(p).token
    clock.ms += 10
    assert left(p) == 1
    memory.settle(p, (-1,), token)
    assert left(p) == 2


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_refund_never_credits_a_later_window(strategy: str) -> None:
    memory, clock, left = store(strategy)
    p = plan()
    old = memory.decision(p).token
    clock.ms += 2001  # two windows on: the old reservation holds nothing any more
    new = memory.decision(p).token
    assert left(p) == 1
    memory.settle(p, (-1,), old)
    assert left(p) == 1  # the new reservation still counts
    memory.settle(p, (-1,), new)
    assert left(p) == 2


def test_the_sliding_counter_refunds_the_window_the_reservation_went_into() -> None:
    memory, clock, left = store("sliding-window-counter")
    p = plan("1/second")
    old = memory.decision(p).token
    clock.ms += 1001  # the old window is now the previous one, still weighing in
    assert left(p) == 1  # 1 * 999/1000, floored: the previous window weighs 0
    new = memory.decision(p).token
    memory.settle(p, (-1,), old)  # taken from the previous counter, not the current
    key = p.items[0].limit_key
    current, _, previous, _ = memory.data[key]
    assert (current, previous) == (1, 0)
    assert left(p) == 0
    memory.settle(p, (-1,), new)
    assert left(p) == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_debt_is_charged(strategy: str) -> None:
    memory, _clock, left = store(strategy)
    p = plan("4/minute")
    token = memory.decision(p).token
    memory.settle(p, (2,), token)  # the response reported a cost of 3
    assert left(p) == 1
    memory.settle(p, (5,), token)  # past the limit: later requests pay
    assert left(p) == 0
    assert not memory.quotas(p)[0].allowed


def test_gcra_refunds_what_time_has_not_drained() -> None:
    memory, clock, left = store("gcra")
    p = plan("2/second")  # one every 500 ms
    token = memory.decision(p).token
    clock.ms += 400  # 400 of its 500 ms have drained
    memory.settle(p, (-1,), token)
    entry = memory.data.get(p.items[0].limit_key)
    assert entry is None  # the bucket is full again: nothing owed
    assert left(p) == 2


def test_refunds_never_go_below_zero() -> None:
    memory, _clock, left = store("fixed-window")
    p = plan("3/minute", cost=2)
    token = memory.decision(p).token
    memory.settle(p, (-5,), token)
    assert memory.data[p.items[0].limit_key][0] == 0
    assert left(p) == 3


# -- what a response changes -----------------------------------------------------------------


def test_response_info_reads_asgi_and_wsgi_headers() -> None:
    asgi = ResponseInfo(200, [(b"X-Tokens-Used", b"12"), (b"vary", b"a"), (b"Vary", b"b")])
    wsgi = ResponseInfo(404, [("x-tokens-used", "7")])
    assert (asgi.status, asgi.header("x-tokens-used"), asgi.header("VARY")) == (
        200, "12", "a, b")
    assert (wsgi.status, wsgi.header("X-Tokens-Used"), wsgi.header("missing")) == (
        404, "7", None)


@pytest.mark.parametrize(("status", "used", "expected"), [
    (200, None, (-2,)),     # count_when False: the whole cost back
    (401, "5", (3,)),       # counts, and reported 5 against the 2 reserved
    (401, "2", None),       # exactly the reservation: nothing to settle
    (401, "-4", (-2,)),     # a negative report counts as 0
    (401, "many", None),    # nonsense: logged, the reservation stands
])
def test_settle_deltas(status: int, used: str | None, expected: tuple[int, ...] | None,
                       ) -> None:
    p = plan("10/minute", cost=2, response_cost=lambda r: int(r.header("x-used") or "2"))
    headers = [] if used is None else [("X-Used", used)]
    assert settle_deltas(p, ResponseInfo(status, headers)) == expected


def test_rules_without_settling_have_no_deltas() -> None:
    p = Policy(rules=[Rule("/x", "1/minute")]).plan(RequestInfo("GET", "/x", client="1.2.3.4"))
    assert p is not None
    assert p.settle is None
    assert settle_deltas(p, ResponseInfo(500)) is None
