"""Hostile request headers: what a request costs stays bounded however a client shapes its
headers. Plain RequestInfo objects, no I/O.

Timing bounds are ratios of the fastest of several runs, never wall-clock thresholds: a
linear cost grows four times from 10,000 to 40,000 lines, a quadratic one sixteen times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ratelimit_mw._request import RequestInfo

#: A linear cost grows by the size ratio (4 or 10 here); this leaves room for noise
#: while a quadratic cost (16 or 100) fails.
LINEAR = 5


def fastest(call: Callable[[], object], repeats: int = 9) -> float:
    """The shortest of *repeats* timings of *call*, in seconds: the least noisy figure."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


# --- repeated header lines are joined in linear time ----------------------------------


def _repeated_lines(lines: int) -> dict[str, Any]:
    # uvicorn with httptools accepts 40,000 short lines of one name in one request.
    headers = [(b"host", b"example.com")] + [(b"X-A", b"%d" % i) for i in range(lines)]
    return {"type": "http", "path": "/", "headers": headers, "client": ("10.0.0.1", 1)}


def test_repeated_header_lines_are_joined_in_order() -> None:
    info = RequestInfo.from_scope(_repeated_lines(40_000))
    assert info.header("x-a") == ", ".join(str(i) for i in range(40_000))
    assert info.host == "example.com"
    assert list(info.headers) == ["host", "x-a"]


def test_joining_repeated_header_lines_is_linear() -> None:
    small, large = _repeated_lines(10_000), _repeated_lines(40_000)
    ratio = (fastest(lambda: RequestInfo.from_scope(large).headers)
             / fastest(lambda: RequestInfo.from_scope(small).headers))
    assert ratio <= LINEAR


def _joined_environ(lines: int) -> dict[str, Any]:
    # A WSGI server joins repeated lines itself: what reaches us is one value per name.
    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "10.0.0.1",
            "HTTP_HOST": "example.com", "HTTP_X_A": ",".join(str(i) for i in range(lines))}


def test_environ_header_values_are_taken_as_the_server_joined_them() -> None:
    small, large = _joined_environ(10_000), _joined_environ(40_000)
    assert RequestInfo.from_environ(large).header("X-A") == large["HTTP_X_A"]
    ratio = (fastest(lambda: RequestInfo.from_environ(large).headers)
             / fastest(lambda: RequestInfo.from_environ(small).headers))
    assert ratio <= LINEAR

