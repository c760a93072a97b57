"""The cache under an attacker's input ("Bounded under attack"): each test replays one
input of that run and states the bound it must keep, as a count or a size."""

from __future__ import annotations

import asyncio
import gc
import re
import sys
from collections.abc import Callable
from functools import partial
from types import FrameType, SimpleNamespace
from typing import Any

import pytest

from ratelimit_mw._types import ASGIApp, Message, Receive, Scope, Send
from ratelimit_mw.cache import (
    AsyncMemoryCache,
    CacheRule,
    MemoryCache,
    ResponseCacheMiddleware,
    _memory_store,
)
from ratelimit_mw.cache._asgi import _request as asgi_request
from ratelimit_mw.cache._flow import header_dict
from ratelimit_mw.errors import ConfigurationError
from tests.cache.harness import (
    ASGI,
    AnyCache,
    Interface,
    Reply,
    Seen,
    is_hit,
    stored_values,
)
from tests.growth import LINEAR, SCALE, cost_ratio

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


def test_repeated_header_lines_are_joined_in_linear_time() -> None:
    """80,000 ``X-A`` lines (625 KB) are joined into one value in linear time: sixteen
    times the lines may cost at most `LINEAR` times as long (quadratic joining: 256)."""
    small, large = header_lines(5_000), header_lines(5_000 * SCALE)
    joined = asgi_request(large).header("x-a")
    assert joined == ", ".join(str(i % 10) for i in range(5_000 * SCALE))
    assert header_dict([("X-A", "1"), ("Accept", "*/*"), ("x-a", "2")]) == {
        "x-a": "1, 2", "accept": "*/*"}
    gc.disable()  # a collection inside one timing would stand for the joining's cost
    try:
        ratio = cost_ratio(lambda: asgi_request(large), lambda: asgi_request(small), LINEAR)
    finally:
        gc.enable()
    assert ratio <= LINEAR, f"{SCALE} times the lines cost {ratio:.1f} times as long"


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


def echo_header(name: str, seen: Seen, n: int) -> Reply:
    """Builds a link from request header *name*, as apps do from forwarding headers."""
    return Reply(f"//{seen.headers.get(name, 'self')}/app.js #{n}",
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
    upstream, app = interface.cached(cache, partial(echo_header, header), **options)
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


# --- the memory store under a flood of distinct URLs ------------------------------------------

STORE_FILE = _memory_store.__file__


def store_ops(call: Callable[[], object]) -> int:
    """The bytecodes *call* runs in the memory store's own code: a count of its work that
    any scan over the entries or the tags would make grow with their number."""
    count = 0

    def opcodes(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        count += event == "opcode"
        return opcodes

    def calls(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code.co_filename != STORE_FILE:
            return None
        frame.f_trace_opcodes = True
        return opcodes

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count


async def fetch(app: ASGIApp, path: str) -> int:
    """One GET of *path* through the ASGI *app* (a scope by hand, no client); the status."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    path, _, query = path.partition("?")
    await app({"type": "http", "method": "GET", "scheme": "http", "path": path,
               "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
               "headers": [(b"host", b"example.com")]}, receive, send)
    return int(sent[0]["status"])


async def fresh_page(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind the cache: a small page, fresh for a minute, for every URL."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"cache-control", b"max-age=60")]})
    await send({"type": "http.response.body", "body": b"page " + scope["path"].encode()})


#: The store's bytecodes per request, amortised: a lookup, two values stored, two tags.
STORE_OPS_PER_REQUEST = 1_500


def tag_index(store: MemoryCache) -> list[str]:
    """Every member of every tag of *store*, once per tag listing it."""
    return [name for members in store._tags.values() for name in members]


@pytest.mark.parametrize("url", ["/p/{i}", "/search?q={i}"], ids=["paths", "queries"])
def test_a_flood_of_distinct_urls_keeps_the_tag_index_to_the_live_entries(url: str) -> None:
    """20,000 distinct URLs (one tag each, or all under one path's tag) through the ASGI
    cache on a store of 1,000 entries: the tags list exactly the entries still stored,
    and storing a response costs the same work at the end as when the store first
    filled: at most 1.25 times as many bytecodes in the store per request."""
    store = MemoryCache(max_entries=1_000)
    app = ResponseCacheMiddleware(fresh_page, cache=AsyncMemoryCache(store))

    def requests(first: int, count: int) -> None:
        async def run() -> None:
            for i in range(first, first + count):
                assert await fetch(app, url.format(i=i)) == 200
        asyncio.run(run())

    requests(0, 1_000)  # two entries a URL: the store is full from the 500th on
    early = store_ops(lambda: requests(1_000, 500))
    requests(1_500, 18_000)
    late = store_ops(lambda: requests(19_500, 500))
    assert 990 <= len(store._data) <= 1_000  # full but for the slot a miss's lock gave back
    assert sorted(tag_index(store)) == sorted(store._data)
    assert sorted(store._tags_of) == sorted(store._data)
    assert late <= 1.25 * early, (early / 500, late / 500)
    assert late / 500 <= STORE_OPS_PER_REQUEST


def test_an_expired_entry_leaves_its_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries that expire go from the tags with their values, at the next call, whatever
    it is (a clock of our own: no sleeping)."""
    now = [1_000.0]
    monkeypatch.setattr(_memory_store, "time", SimpleNamespace(monotonic=lambda: now[0]))
    store = MemoryCache()
    for i in range(200):
        store.set(f"k{i}", i, ttl=1 if i % 2 else 60)
        store.tag(f"t{i % 7}", f"k{i}", 1 if i % 2 else 60)
    assert len(tag_index(store)) == len(store._data) == 200
    now[0] += 2
    assert store.get("k0") == 0
    assert sorted(store._data) == sorted(tag_index(store)) == sorted(
        f"k{i}" for i in range(0, 200, 2))
    assert store.invalidate_tag("t0") == len([i for i in range(0, 200, 2) if i % 7 == 0])


# --- the memory store under a flood of large bodies -------------------------------------------


def large(seen: Seen, n: int) -> Reply:
    """A body of 256 KiB, fresh for a minute: 341 KiB of JSON once base64-encoded."""
    return Reply(bytes([65 + n % 26]) * (256 << 10), headers={"Cache-Control": "max-age=60"})


async def test_a_flood_of_large_bodies_keeps_the_store_to_max_bytes(
        interface: Interface) -> None:
    """40 distinct URLs of 256 KiB bodies (14 MiB of JSON) on a store of max_bytes=1 MiB:
    the JSON text stored never exceeds 1 MiB, and the latest responses are still hits."""
    cache = interface.memory_cache(max_bytes=1 << 20)
    upstream, app = interface.cached(cache, large)
    sizes = []
    async with interface.client(app) as c:
        for i in range(40):
            assert len((await c.get(f"/big/{i}")).content) == 256 << 10
            sizes.append(sum(len(value) for value in await stored_values(cache)))
        last = await c.get("/big/39")
    assert max(sizes) <= 1 << 20
    assert sizes[-1] > 2 * (256 << 10)  # still storing: the oldest made room
    assert is_hit(last)
    assert upstream.calls == 40


def test_a_value_larger_than_max_bytes_is_not_stored() -> None:
    store = MemoryCache(max_bytes=1_000)
    assert store.set("k", "small", ttl=60)
    store.tag("t", "k", 60)
    assert store.set("k", "x" * 1_000, ttl=60) is False  # 1,002 bytes of JSON
    assert store.get("k") is None  # the older value went too: never a stale one
    assert (store._data, store._tags, store._tags_of, store._bytes) == ({}, {}, {}, 0)
    assert store.set("k", "x" * 998, ttl=60)  # exactly 1,000 bytes fit
    assert store._bytes == 1_000


@pytest.mark.parametrize("option", ["max_bytes", "max_entries"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "64M", None])
def test_the_memory_store_bounds_are_checked(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"^{option}={re.escape(repr(value))}: "):
        MemoryCache(**{option: value})
