"""How a cost grows with its input, for the tests that bound it ("Bounded under attack").

A bound is a ratio of CPU times of one call on a small and on a large input, never a
threshold in seconds. The inputs are far enough apart that the bound sits several times
away from both the cost we have and the cost we guard against: from 1 to 16 times the
input, linear work grows 16 times and quadratic work 256 times, so `LINEAR` (40) is
neither reached by cache effects on a busy machine nor missed by a quadratic join.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: How much larger the large input is than the small one in a linearity test.
SCALE = 16

#: The most a linear cost may grow over `SCALE` times the input.
LINEAR = 40


def fastest(call: Callable[[], object], repeats: int = 7) -> float:
    """The shortest of *repeats* timings of *call*, in CPU seconds of this process.

    CPU time, not wall time: on a shared machine a run may wait for a CPU, and a wall
    clock would count the wait, more often on long runs than on short ones.
    """
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        call()
        best = min(best, time.process_time() - start)
    return best


def cost_ratio(large: Callable[[], object], small: Callable[[], object], bound: float,
               attempts: int = 5) -> float:
    """How many times as long *large* takes as *small*, each timed by `fastest`.

    Other processes still evict the caches now and then: the ratio is measured again, up
    to *attempts* times, until it is within *bound*. A cost that really grows faster stays
    several times over the bound on every attempt.
    """
    ratio = float("inf")
    for _ in range(attempts):
        ratio = min(ratio, fastest(large) / fastest(small))
        if ratio <= bound:
            break
    return ratio
