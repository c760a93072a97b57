"""The cache under an attacker's input ("Bounded under attack"): each test replays one
input of that run and states the bound it must keep, as a count or a size."""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from ratelimit_mw._types import Scope
from ratelimit_mw.cache import CacheRule
from ratelimit_mw.cache._asgi import _request as asgi_request
from ratelimit_mw.cache._flow import header_dict
from ratelimit_mw.errors import ConfigurationError
from tests.cache.harness import ASGI, AnyCache, Interface, Reply, Respond, Seen, is_hit

# --- the query's normal form: a repeated name keeps the order of its values --------------


def echo_a(seen: Seen, n: int) -> Reply:
    """The value of ``a`` as the framework reads it (Starlette: the last, Flask: the first)."""
    return Reply(f"a={seen.args['a']} #{n}", headers={"Cache-Control": "max-age=60"})


async def test_the_order_of_a_repeated_name_is_two_entries(interface: Interface,
                                                           cache: AnyCache) -> None:
    """``?a=1&a=2`` and ``?a=2&a=1`` are different requests to Starlette and to Flask:
    never one entry served for both."""
    upstream, app = interface.cached(cache, echo_a)
    async with interface.client(app) as c:
        bodies = [(await c.get(f"/q?{query}")).content
                  for query in ("a=1&a=2", "a=2&a=1", "a=1&a=2", "a=2&a=1")]
    if interface is ASGI:  # Starlette reads the last value
        assert bodies == [b"a=2 #1", b"a=1 #2", b"a=2 #1", b"a=1 #2"]
    else:  # Flask reads the first
        assert bodies == [b"a=1 #1", b"a=2 #2", b"a=1 #1", b"a=2 #2"]
    assert upstream.calls == 2



# --- repeated header lines --------------------------------------------------------------


def header_lines(count: int) -> Scope:
    """A request scope with *count* ``X-A`` lines, values ``0`` to ``9`` in turn."""
    return {"type": "http", "method": "GET", "scheme": "http", "path": "/h",
            "raw_path": b"/h", "query_string": b"",
            "headers": [(b"host", b"example.com")] + [(b"x-a", b"%d" % (i % 10))
                                                       for i in range(count)]}


def best_time(call: Callable[[], object], repeats: int = 7) -> float:
    """The shortest of *repeats* runs of *call*, in CPU seconds of this thread: time the
    scheduler gives to other processes would count against the longer run only."""
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        call()
        times.append(time.thread_time() - started)
    return min(times)


def test_repeated_header_lines_are_joined_in_linear_time() -> None:
    """40,000 ``X-A`` lines (312 KB) are joined into one value in linear time: four times
    the lines may cost at most five times as long (quadratic joining costs sixteen)."""
    small, large = header_lines(10_000), header_lines(40_000)
    joined = asgi_request(large).header("x-a")
    assert joined == ", ".join(str(i % 10) for i in range(40_000))
    assert header_dict([("X-A", "1"), ("Accept", "*/*"), ("x-a", "2")]) == {
        "x-a": "1, 2", "accept": "*/*"}
    gc.disable()  # a collection inside one timing would stand for the joining's cost
    try:
        ratio = best_time(lambda: asgi_request(large)) / best_time(lambda: asgi_request(small))
    finally:
        gc.enable()
    assert ratio <= 5, f"40k lines cost {ratio:.1f} times 10k lines"


# --- the method's case --------------------------------------------------------------------


async def test_a_lower_case_method_is_that_method(interface: Interface,
                                                  cache: AnyCache) -> None:
    """``get`` and ``head`` are GET and HEAD to the cache under ASGI and WSGI alike (as to
    werkzeug): served from GET's entry, never taken for an unsafe method that drops it.
    A response to ``get`` is never stored: Starlette answers it 405, Flask as a GET."""
    upstream, app = interface.cached(cache, rules=[CacheRule("/{rest:path}", ttl=60)])
    async with interface.client(app) as c, \
            interface.client(interface.lower_case_method(app)) as lower:
        stored = await c.get("/items/1")
        hits = [await lower.get("/items/1"), await lower.head("/items/1")]
        again = await c.get("/items/1")
        miss = await lower.get("/other")
        fresh = await c.get("/other")
    assert stored.content == b"GET /items/1? #1"
    assert [(r.status_code, is_hit(r)) for r in hits] == [(200, True), (200, True)]
    assert [r.content for r in hits] == [stored.content, b""]
    assert is_hit(again)
    assert again.content == stored.content
    assert miss.status_code == (405 if interface is ASGI else 200)
    assert not is_hit(fresh)
    assert (fresh.status_code, fresh.content) == (200, f"GET /other? #{upstream.calls}".encode())
    assert upstream.calls == (2 if interface is ASGI else 3)  # 405 comes from the router


# --- keyed request headers ------------------------------------------------------------------


def echo_header(name: str) -> Respond:
    """Builds a link from request header *name*, as apps do from forwarding headers."""
    return lambda seen, n: Reply(f"//{seen.headers.get(name, 'self')}/app.js #{n}",
                                 headers={"Cache-Control": "max-age=60"})


@pytest.mark.parametrize(("header", "options"), [
    ("X-Original-Host", {}),
    ("X-Forwarded-Server", {}),
    ("X-Tenant", {"extra_key_headers": ["X-Tenant"]}),
    ("x-tenant", {"extra_key_headers": ("Accept", "X-TENANT")}),
])
async def test_a_keyed_header_is_its_own_entry(interface: Interface, cache: AnyCache,
                                               header: str, options: dict[str, Any]) -> None:
    """Two requests differing only in a forwarding header (built in, or one the user
    names) are two entries: a forged value reaches only the entry it made."""
    upstream, app = interface.cached(cache, echo_header(header), **options)
    forged = {header: "evil.example"}
    async with interface.client(app) as c:
        bodies = [(await c.get("/page", headers=h)).content for h in ({}, forged, {}, forged)]
    assert bodies == [b"//self/app.js #1", b"//evil.example/app.js #2"] * 2
    assert upstream.calls == 2


@pytest.mark.parametrize(("value", "named"), [
    ("X-Tenant", "'X-Tenant': a list of header names"),
    (["X-Tenant", "bad name"], "'bad name' is not a header name"),
    ([b"x-tenant"], "b'x-tenant' is not a header name"),
    ([""], "'' is not a header name"),
])
def test_extra_key_headers_are_checked(interface: Interface, value: Any, named: str) -> None:
    with pytest.raises(ConfigurationError, match=f"extra_key_headers.*{re.escape(named)}"):
        interface.middleware(interface.upstream().app, cache=interface.memory_cache(),
                             extra_key_headers=value)
