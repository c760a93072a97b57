"""Turn the numbers a one-round-trip check returns into `Quota` objects. No I/O.

Each strategy's script (see ``_lua.py``) returns a fixed number of integers per limit;
the functions here make quotas of them, so the arithmetic of resets and retries lives in
plain, unit-tested Python rather than in Lua.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .._core import Plan, Quota

__all__ = [
    "DECODERS",
    "fixed_window",
    "moving_window",
    "sliding_retry_ms",
    "sliding_window",
]

Decoder = Callable[[Plan, Sequence[int], float], tuple[Quota, ...]]


def fixed_window(plan: Plan, values: Sequence[int], now: float) -> tuple[Quota, ...]:
    """``allowed, count, ttl_ms`` per limit."""
    if len(values) == 3:
        allowed, count, ttl_ms = values
        limit = plan.items[0].limit
        wait = ttl_ms / 1000
        return (Quota(bool(allowed), limit, max(0, limit.amount - count), now + wait,
                      0.0 if allowed else wait),)
    quotas = []
    for index, item in enumerate(plan.items):
        allowed, count, ttl_ms = values[3 * index:3 * index + 3]
        wait = ttl_ms / 1000
        quotas.append(Quota(bool(allowed), item.limit, max(0, item.limit.amount - count),
                            now + wait, 0.0 if allowed else wait))
    return tuple(quotas)


def moving_window(plan: Plan, values: Sequence[int], now: float) -> tuple[Quota, ...]:
    """``allowed, count, reset_ms, retry_ms`` per limit."""
    quotas = []
    for index, item in enumerate(plan.items):
        allowed, count, reset_ms, retry_ms = values[4 * index:4 * index + 4]
        quotas.append(Quota(bool(allowed), item.limit, max(0, item.limit.amount - count),
                            now + reset_ms / 1000, 0.0 if allowed else retry_ms / 1000))
    return tuple(quotas)


def sliding_retry_ms(amount: int, cost: int, window_ms: int, previous: int,
                     previous_ttl: int, current: int, current_ttl: int) -> float:
    """Milliseconds until a request of *cost* fits a sliding-window counter.

    A request fits when ``floor(previous * previous_ttl / window) + current + cost <=
    amount``. The previous window's share decays linearly; when the current window ends
    (its TTL drops below one window) it becomes the previous one with one window of TTL,
    and decays in turn. The floor makes each bound strict: one millisecond past it.
    """
    if cost > amount:
        return float(window_ms)
    room = amount - cost
    rollover = max(0, current_ttl - window_ms) if current_ttl else math.inf
    if current <= room and previous:
        # Wait until previous * (previous_ttl - t) / window < room - current + 1.
        wait = max(0.0, previous_ttl - window_ms * (room - current + 1) / previous) + 1
        if wait <= rollover:
            return wait
    if rollover is math.inf:
        return float(window_ms)  # nothing left to decay: cannot happen for a refusal
    # After the rollover: current * (window - s) / window < room + 1.
    bound = window_ms * (1 - (room + 1) / current) if current else -1.0
    return rollover + (bound + 1 if bound >= 0 else 0.0)


def sliding_window(plan: Plan, values: Sequence[int], now: float) -> tuple[Quota, ...]:
    """``allowed, previous, previous_ttl_ms, current, current_ttl_ms`` per limit.

    ``remaining`` and the reset follow ``limits``' own ``get_window_stats`` for this
    strategy, so headers agree with what ``limits`` reports for the same keys.
    """
    quotas = []
    for index, item in enumerate(plan.items):
        allowed, previous, previous_ttl, current, current_ttl = values[5 * index:5 * index + 5]
        window_ms = item.limit.get_expiry() * 1000
        weighted = previous * previous_ttl / window_ms + current
        remaining = max(0, item.limit.amount - math.floor(weighted))
        if previous or current:
            # As limits: the sooner of one previous hit decaying away and the current
            # window ending. (limits takes current_ttl % window, which is 0 for a window
            # just opened; the end of the window is what is meant.)
            current_end = current_ttl - window_ms if current_ttl > window_ms else current_ttl
            reset_in = min(previous_ttl % (window_ms / previous) if previous else math.inf,
                           current_end if current else math.inf)
        else:
            reset_in = 0.0
        retry = 0.0 if allowed else sliding_retry_ms(
            item.limit.amount, item.cost, window_ms, previous, previous_ttl, current,
            current_ttl) / 1000
        quotas.append(Quota(bool(allowed), item.limit, remaining, now + reset_in / 1000,
                            retry))
    return tuple(quotas)


#: The decoder of each strategy's integers, by strategy name.
DECODERS: dict[str, Decoder] = {
    "fixed-window": fixed_window,
    "moving-window": moving_window,
    "sliding-window-counter": sliding_window,
}
