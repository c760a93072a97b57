"""The circuit breaker with a fake clock: one event per outage, probes after back-off."""

from __future__ import annotations

import pytest

from ratelimit_mw._breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_closed_allows_everything() -> None:
    breaker = CircuitBreaker(clock=Clock())
    assert all(breaker.allow() for _ in range(100))
    assert not breaker.is_open


def test_outage_opens_then_probe_closes() -> None:
    clock = Clock()
    events: list[tuple[str, object]] = []
    breaker = CircuitBreaker(backoff=1.0, clock=clock,
                             on_event=lambda event, error: events.append((event, error)))
    error = ConnectionError("refused")
    breaker.failure(error)
    for _ in range(5):  # requests already under way fail too: still one event
        breaker.failure(error)
    assert events == [("storage_down", error)]
    assert breaker.is_open
    assert not any(breaker.allow() for _ in range(50))  # no request pays a timeout
    clock.now += 1.0
    assert breaker.allow()        # the probe
    assert not breaker.allow()    # only one at a time
    breaker.success()
    assert events[-1] == ("storage_up", None)
    assert len(events) == 2
    assert breaker.allow()
    assert not breaker.is_open


def test_failed_probes_back_off_exponentially_capped() -> None:
    clock = Clock()
    breaker = CircuitBreaker(backoff=0.5, max_backoff=2.0, clock=clock)
    breaker.failure(OSError())
    waits = []
    for _ in range(5):
        start = clock.now
        while not breaker.allow():
            clock.now += 0.25
        waits.append(clock.now - start)
        breaker.failure(OSError())
    assert waits == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_recovery_resets_backoff() -> None:
    clock = Clock()
    breaker = CircuitBreaker(backoff=0.5, clock=clock)
    breaker.failure(OSError())
    clock.now += 0.5
    assert breaker.allow()
    breaker.failure(OSError())  # back-off now 1.0
    clock.now += 1.0
    assert breaker.allow()
    breaker.success()
    breaker.failure(OSError())  # a new outage starts from the first back-off again
    clock.now += 0.5
    assert breaker.allow()


def test_a_broken_hook_does_not_break_the_breaker() -> None:
    def hook(event: str, error: object) -> None:
        raise RuntimeError("metrics are down too")

    breaker = CircuitBreaker(clock=Clock(), on_event=hook)
    breaker.failure(OSError())
    assert breaker.is_open


def test_bad_backoff_rejected() -> None:
    with pytest.raises(ValueError, match="backoff"):
        CircuitBreaker(backoff=0)
    with pytest.raises(ValueError, match="backoff"):
        CircuitBreaker(backoff=5, max_backoff=1)


def test_an_abandoned_probe_lets_another_request_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(backoff=1.0, clock=clock)
    breaker.failure(OSError())
    clock.now += 1.0
    assert breaker.allow()      # the probe...
    breaker.abandoned()         # ...was cancelled before Redis answered
    assert breaker.allow()      # another request may probe at once
    breaker.success()
    assert not breaker.is_open
