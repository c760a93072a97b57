"""Hostile request headers: what a request costs stays bounded however a client shapes its
headers. Plain RequestInfo objects, no I/O.

Timing bounds are ratios of the fastest of several runs (see `tests.growth`), never
thresholds in seconds; where a count will do (address parses), the bound is a count.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratelimit_mw import keys
from ratelimit_mw._request import RequestInfo
from tests.growth import LINEAR, SCALE, cost_ratio

#: A key function reads a bounded part of the header: its cost does not grow from 10,000
#: to 100,000 entries, where a walk over every entry grows 10 times.
BOUNDED = 5


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
    small, large = _repeated_lines(5_000), _repeated_lines(5_000 * SCALE)
    assert cost_ratio(lambda: RequestInfo.from_scope(large).headers,
                      lambda: RequestInfo.from_scope(small).headers, LINEAR) <= LINEAR


def _joined_environ(lines: int) -> dict[str, Any]:
    # A WSGI server joins repeated lines itself: what reaches us is one value per name.
    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "10.0.0.1",
            "HTTP_HOST": "example.com", "HTTP_X_A": ",".join(str(i) for i in range(lines))}


def test_environ_header_values_are_taken_as_the_server_joined_them() -> None:
    small, large = _joined_environ(5_000), _joined_environ(5_000 * SCALE)
    assert RequestInfo.from_environ(large).header("X-A") == large["HTTP_X_A"]
    assert cost_ratio(lambda: RequestInfo.from_environ(large).headers,
                      lambda: RequestInfo.from_environ(small).headers, LINEAR) <= LINEAR


# --- the trusted-proxy walk is bounded ------------------------------------------------

#: The bound docs/keys.md states: entries the trusted_proxies walk examines, from the right.
MAX_HOPS = 32
PROXY = "10.0.0.1"
CLIENT = "198.51.100.9"


def _proxy(i: int) -> str:
    return f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"


def _header(name: str, addresses: list[str]) -> dict[str, str]:
    if name == "Forwarded":
        return {name: ", ".join(f"for={a};proto=https" for a in addresses)}
    return {name: ", ".join(addresses)}


def _request(name: str, addresses: list[str]) -> RequestInfo:
    return RequestInfo("GET", "/", client=PROXY, headers=_header(name, addresses))


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every value the real address parser is given while the test runs."""
    seen: list[str] = []
    real = keys.parse_ip

    def counting(value: str) -> Any:
        seen.append(value)
        return real(value)

    monkeypatch.setattr(keys, "parse_ip", counting)
    return seen


HEADERS = ["X-Forwarded-For", "Forwarded"]


@pytest.mark.parametrize("name", HEADERS)
def test_walk_stops_after_the_bound_at_the_last_trusted_entry(
        name: str, parsed: list[str]) -> None:
    # 100,000 trusted entries, a client claim at the far left: the walk examines
    # MAX_HOPS of them and counts against the last it verified, never the claim.
    addresses = [CLIENT] + [_proxy(i) for i in range(100_000)]
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header=name)
    assert key(_request(name, addresses)) == f"ip:{addresses[-MAX_HOPS]}"
    assert len(parsed) <= MAX_HOPS + 1  # the peer, then the entries examined


@pytest.mark.parametrize("name", HEADERS)
def test_walk_bound_is_exact(name: str) -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header=name)
    trusted = [_proxy(i) for i in range(MAX_HOPS)]
    # Within the bound, everything is as without one.
    assert key(_request(name, trusted)) == f"ip:{trusted[0]}"
    assert key(_request(name, [CLIENT, *trusted[1:]])) == f"ip:{CLIENT}"
    assert key(_request(name, ["garbage", *trusted[1:]])) == f"ip:{trusted[1]}"
    # Past it, nothing is believed: the last verified entry is the client.
    for left in (CLIENT, "garbage", _proxy(99)):
        assert key(_request(name, [left, *trusted])) == f"ip:{trusted[0]}"


_LEFT = st.lists(st.sampled_from([CLIENT, "2001:db8::1", PROXY, "unknown", "", "x" * 100,
                                  "for=1.2.3.4", '"', ";", "1.2.3.4:80"]), max_size=50)


@given(_LEFT, st.sampled_from(HEADERS))
def test_nothing_left_of_the_bound_changes_the_identity(left: list[str], name: str) -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header=name)
    trusted = [_proxy(i) for i in range(MAX_HOPS)]
    assert key(_request(name, [*left, *trusted])) == f"ip:{trusted[0]}"


@pytest.mark.parametrize("name", HEADERS)
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_trusted_hops_reads_only_its_entries(name: str, hops: int, parsed: list[str]) -> None:
    addresses = [CLIENT] + [_proxy(i) for i in range(100_000)]
    key = keys.client_ip(trusted_hops=hops, header=name)
    assert key(_request(name, addresses)) == f"ip:{addresses[-hops]}"
    assert len(parsed) == 2  # the peer and the N-th entry from the right


@pytest.mark.parametrize("name", HEADERS)
@pytest.mark.parametrize("trust", [{"trusted_proxies": ["10.0.0.0/8"]}, {"trusted_hops": 2}])
def test_cost_does_not_grow_with_the_header(name: str, trust: dict[str, Any]) -> None:
    key = keys.client_ip(header=name, **trust)
    small = _request(name, [_proxy(i) for i in reversed(range(10_000))])
    large = _request(name, [_proxy(i) for i in reversed(range(100_000))])
    assert key(small) == key(large)
    assert cost_ratio(lambda: key(large), lambda: key(small), BOUNDED) <= BOUNDED


@given(st.text(alphabet=",1 ", max_size=30), st.integers(min_value=1, max_value=40))
def test_rightmost_entries_are_the_tail_of_a_full_split(value: str, count: int) -> None:
    assert keys._rightmost(value, count) == value.split(",")[-count:]
