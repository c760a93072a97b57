"""ResponseCacheMiddleware in front of a real Starlette app and WSGIResponseCacheMiddleware
in front of a real Flask app, through httpx, on the memory store and a real Redis: one test
per rule of DESIGN.md §6, each run through both middlewares, showing how many times the
handler ran and the bytes every client was served."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import http_sf
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimit_mw.cache import AsyncMemoryCache, CacheRule, MemoryCache
from ratelimit_mw.cache._http import etag_for
from tests.cache.harness import (
    INTERFACES,
    AnyCache,
    Interface,
    Reply,
    Respond,
    Seen,
    is_hit,
    keep_repeats,
    numbered,
    overwrite,
    settle,
    status_of,
    stored_values,
    with_vary,
)
from tests.redis_server import PrivateRedis

CACHEABLE = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]
NOT_CACHEABLE = [201, 206, 302, 303, 307, 429, 500, 502, 503]


def fixed_cc(cc: str) -> Respond:
    return lambda seen, n: Reply(f"#{n}", headers={"Cache-Control": cc})


# --- 1. GET only; HEAD from GET; unsafe methods invalidate ----------------------------


async def test_get_is_stored_and_served(interface: Interface, cache: AnyCache) -> None:
    upstream, app = interface.cached(cache)
    async with interface.client(app) as c:
        first = await c.get("/items/1")
        second = await c.get("/items/1")
    assert upstream.calls == 1
    assert first.content == second.content == b"GET /items/1? #1"
    assert not is_hit(first)
    assert is_hit(second)


async def test_head_is_served_from_the_get_entry(interface: Interface, cache: AnyCache) -> None:
    upstream, app = interface.cached(cache)
    async with interface.client(app) as c:
        await c.get("/items/1")
        get = await c.get("/items/1")
        head = await c.head("/items/1")
    assert upstream.calls == 1
    assert is_hit(head)
    assert head.content == b""
    assert get.content == b"GET /items/1? #1"

    def fields(response: httpx.Response) -> list[tuple[str, str]]:
        return [(n, v) for n, v in response.headers.multi_items()
                if n not in ("age", "cache-status")]

    assert fields(head) == fields(get)
    assert head.headers["content-length"] == str(len(get.content))


async def test_a_head_miss_is_not_stored(interface: Interface, cache: AnyCache) -> None:
    upstream, app = interface.cached(cache)
    async with interface.client(app) as c:
        head = await c.head("/items/1")
        first = await c.get("/items/1")
        second = await c.get("/items/1")
    assert upstream.calls == 2
    assert head.content == b""
    assert first.content == second.content == b"GET /items/1? #2"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_a_successful_unsafe_request_invalidates_the_uri(
        interface: Interface, cache: AnyCache, method: str) -> None:
    upstream, app = interface.cached(cache, with_vary)
    requests = [("/items/1?x=1", "a"), ("/items/1?x=2", "a"), ("/items/1", "b"),
                ("/items/1", None)]
    async with interface.client(app) as c:

        async def bodies() -> list[bytes]:
            return [(await c.get(url, headers={"X-Variant": v} if v else {})).content
                    for url, v in requests]

        before = await bodies()
        other = (await c.get("/items/2")).content
        assert upstream.calls == 5
        assert await bodies() == before  # all four stored
        unsafe = await c.request(method, "/items/1")
        assert unsafe.status_code == 200
        assert status_of(unsafe)["fwd"] == "method"
        assert upstream.calls == 6
        after = await bodies()
        assert upstream.calls == 10  # every variant and every query of /items/1 dropped
        assert after == [b"/items/1?x=1 a #7", b"/items/1?x=2 a #8", b"/items/1? b #9",
                         b"/items/1? None #10"]
        assert (await c.get("/items/2")).content == other  # another URI: still stored
    assert upstream.calls == 10


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 500, 503])
async def test_a_failed_unsafe_request_does_not_invalidate(
        interface: Interface, cache: AnyCache, status: int) -> None:
    def respond(seen: Seen, n: int) -> Reply:
        if seen.method == "POST":
            return Reply("no", status=status)
        return numbered(seen, n)

    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        first = await c.get("/items/1")
        assert (await c.post("/items/1")).status_code == status
        again = await c.get("/items/1")
    assert upstream.calls == 2
    assert again.content == first.content == b"GET /items/1? #1"
    assert is_hit(again)


@pytest.mark.parametrize("method", ["OPTIONS"])
async def test_a_safe_method_does_not_invalidate(interface: Interface, cache: AnyCache,
                                                 method: str) -> None:
    """OPTIONS (a CORS preflight) is safe: it must not drop the URI's entries."""
    upstream, app = interface.cached(cache)
    async with interface.client(app) as c:
        first = await c.get("/items/1")
        assert (await c.request(method, "/items/1")).status_code == 200
        again = await c.get("/items/1")
    assert upstream.calls == 2
    assert again.content == first.content


async def test_invalidate_methods(interface: Interface, cache: AnyCache) -> None:
    upstream, app = interface.cached(cache)
    urls = ("/a?x=1", "/a?x=2", "/ab", "/b")
    async with interface.client(app) as c:
        for url in urls:
            await c.get(url)
        assert upstream.calls == 4
        assert await settle(app.invalidate("testserver", "/a")) == 4  # 2 entries + 2 records
        for url in urls:
            await c.get(url)
        assert upstream.calls == 6
        assert await settle(app.invalidate_prefix("testserver", "/a")) > 0  # /a and /ab
        for url in urls:
            await c.get(url)
        assert upstream.calls == 9
        assert await settle(app.invalidate("not a host", "/a")) == 0


# --- 2. no-store / private / max-age / s-maxage / request directives -----------------


@pytest.mark.parametrize("cc", ["no-store", "NO-STORE, max-age=60", "private",
                                "Private, max-age=60", "max-age=60, PRIVATE", "no-cache",
                                "max-age=0"])
async def test_not_stored(interface: Interface, cache: AnyCache, cc: str) -> None:
    upstream, app = interface.cached(cache, fixed_cc(cc))
    async with interface.client(app) as c:
        bodies = [(await c.get("/x")).content for _ in range(3)]
    assert upstream.calls == 3
    assert bodies == [b"#1", b"#2", b"#3"]


@pytest.mark.parametrize("cc", ["max-age=60", "MAX-AGE=60", "Public, Max-Age=60",
                                "s-maxage=60", "S-MAXAGE=60", 'max-age="60"'])
async def test_stored_whatever_the_case(interface: Interface, cache: AnyCache,
                                        cc: str) -> None:
    upstream, app = interface.cached(cache, fixed_cc(cc))
    async with interface.client(app) as c:
        bodies = [(await c.get("/x")).content for _ in range(3)]
    assert upstream.calls == 1
    assert bodies == [b"#1"] * 3


async def test_max_age_and_s_maxage_expire_entries(interface: Interface,
                                                   cache: AnyCache) -> None:
    """s-maxage wins over max-age (both ways); an entry is served until it expires."""
    ages = {"/short": "max-age=60, s-maxage=1", "/long": "max-age=1, s-maxage=60",
            "/plain": "MAX-AGE=1"}
    upstream, app = interface.cached(cache, lambda seen, n: Reply(
        f"{seen.path} #{n}", headers={"Cache-Control": ages[seen.path]}))
    async with interface.client(app) as c:
        first = {p: (await c.get(p)).content for p in ages}
        again = {p: (await c.get(p)).content for p in ages}
        assert upstream.calls == 3
        assert again == first
        await asyncio.sleep(1.1)
        later = {p: (await c.get(p)).content for p in ages}
    assert upstream.calls == 5
    assert later == {"/short": b"/short #4", "/long": b"/long #2", "/plain": b"/plain #5"}


async def test_rule_ttl_is_the_default_freshness(interface: Interface, cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, lambda seen, n: Reply(f"#{n}"),
                                     rules=[CacheRule("/ruled/{id}", ttl=60),
                                            CacheRule("/exempt", exempt=True)])
    async with interface.client(app) as c:
        ruled = [(await c.get("/ruled/1")).content for _ in range(2)]
        unruled = [(await c.get("/other")).content for _ in range(2)]
        exempt = [await c.get("/exempt") for _ in range(2)]
    assert ruled == [b"#1", b"#1"]
    assert unruled == [b"#2", b"#3"]  # no freshness, no default: not stored
    assert [r.content for r in exempt] == [b"#4", b"#5"]
    assert status_of(exempt[0]) == {"fwd": "bypass", "detail": "exempt", "fwd-status": 200}
    assert upstream.calls == 5


async def test_an_expires_in_the_past_beats_the_rules_ttl(interface: Interface,
                                                          cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, lambda seen, n: Reply(
        f"#{n}", headers={"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}),
        rules=[CacheRule("/{rest:path}", ttl=60)])
    async with interface.client(app) as c:
        bodies = [(await c.get("/x")).content for _ in range(2)]
    assert bodies == [b"#1", b"#2"]
    assert upstream.calls == 2


@pytest.mark.parametrize("cc", ["no-cache", "No-Cache", "no-store", "max-age=0, NO-STORE"])
async def test_request_no_cache_bypasses(interface: Interface, cache: AnyCache, cc: str) -> None:
    upstream, app = interface.cached(cache)
    async with interface.client(app) as c:
        first = await c.get("/x")
        bypassed = await c.get("/x", headers={"Cache-Control": cc})
        again = await c.get("/x")
    assert upstream.calls == 2
    assert bypassed.content == b"GET /x? #2"
    assert status_of(bypassed) == {"fwd": "bypass", "detail": "request-no-cache", "fwd-status": 200}
    assert again.content == first.content == b"GET /x? #1"


# --- 3. Authorization / Cookie --------------------------------------------------------


def greeting(cc: str) -> Respond:
    def respond(seen: Seen, n: int) -> Reply:
        who = seen.headers.get("authorization") or seen.headers.get("cookie") or "anon"
        return Reply(f"hello {who} #{n}", headers={"Cache-Control": cc})
    return respond


@pytest.mark.parametrize("credential", ["Authorization", "Cookie"])
async def test_credentials_bypass_the_cache(interface: Interface, cache: AnyCache,
                                            credential: str) -> None:
    """Even a public response to a request with credentials is neither served from nor
    put in the cache without a rule's opt-in."""
    upstream, app = interface.cached(cache, greeting("public, max-age=60"))
    secret = {credential: "alice-secret"}
    async with interface.client(app) as c:
        mine = [await c.get("/me", headers=secret) for _ in range(2)]
        anon = [(await c.get("/me")).content for _ in range(2)]
        mine_again = await c.get("/me", headers=secret)
    assert [r.content for r in mine] == [b"hello alice-secret #1", b"hello alice-secret #2"]
    assert status_of(mine[0]) == {"fwd": "bypass", "detail": "authorized", "fwd-status": 200}
    assert anon == [b"hello anon #3", b"hello anon #3"]  # never alice's body
    assert mine_again.content == b"hello alice-secret #4"  # nor anon's body to alice
    assert upstream.calls == 4


@pytest.mark.parametrize("cc", ["public, max-age=60", "s-maxage=60"])
async def test_opt_in_shares_public_responses(interface: Interface, cache: AnyCache,
                                              cc: str) -> None:
    upstream, app = interface.cached(
        cache, greeting(cc), rules=[CacheRule("/catalog/{rest:path}", allow_authorized=True)])
    async with interface.client(app) as c:
        first = await c.get("/catalog/a", headers={"Authorization": "Bearer t"})
        anon = await c.get("/catalog/a")
        other = await c.get("/catalog/a", headers={"Cookie": "sid=2"})
    assert upstream.calls == 1
    assert first.content == anon.content == other.content == b"hello Bearer t #1"
    assert is_hit(anon)
    assert is_hit(other)


@pytest.mark.parametrize("cc", ["max-age=60", "public, private, max-age=60"])
async def test_opt_in_never_stores_a_non_public_response(interface: Interface,
                                                         cache: AnyCache, cc: str) -> None:
    upstream, app = interface.cached(
        cache, greeting(cc), rules=[CacheRule("/catalog/{rest:path}", allow_authorized=True)])
    async with interface.client(app) as c:
        mine = [(await c.get("/catalog/a", headers={"Authorization": "Bearer t"})).content
                for _ in range(2)]
        anon = await c.get("/catalog/a")
    assert mine == [b"hello Bearer t #1", b"hello Bearer t #2"]
    assert anon.content == b"hello anon #3"
    assert upstream.calls == 3


# --- 4. Set-Cookie, Vary: * ------------------------------------------------------------


async def test_set_cookie_is_never_stored(interface: Interface, cache: AnyCache) -> None:
    def respond(seen: Seen, n: int) -> Reply:
        return Reply(f"#{n}", headers={"Cache-Control": "public, s-maxage=60",
                                       "Set-Cookie": f"sid=session-{n}; Path=/"})

    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        responses = [await c.get("/x") for _ in range(3)]
        c.cookies.clear()
    assert upstream.calls == 3
    assert [r.content for r in responses] == [b"#1", b"#2", b"#3"]
    assert [r.cookies["sid"] for r in responses] == ["session-1", "session-2", "session-3"]


@pytest.mark.parametrize("vary", ["*", "Accept, *"])
async def test_vary_star_is_never_stored(interface: Interface, cache: AnyCache,
                                         vary: str) -> None:
    upstream, app = interface.cached(cache, lambda seen, n: Reply(
        f"#{n}", headers={"Cache-Control": "max-age=60", "Vary": vary}))
    async with interface.client(app) as c:
        bodies = [(await c.get("/x")).content for _ in range(2)]
    assert bodies == [b"#1", b"#2"]
    assert upstream.calls == 2


# --- 5. the key ------------------------------------------------------------------------


def link_from_host(seen: Seen, n: int) -> Reply:
    """Builds an absolute URL from the forwarding headers, as many apps do."""
    host = (seen.headers.get("x-forwarded-host") or seen.headers.get("x-host")
            or seen.headers["host"])
    forwarded = seen.headers.get("forwarded", "")
    if forwarded.startswith("host="):
        host = forwarded[5:]
    return Reply(f'<script src="//{host}/app.js"></script> #{n}',
                 headers={"Cache-Control": "max-age=60"})


@pytest.mark.parametrize(("header", "value"), [("X-Forwarded-Host", "evil.example"),
                                               ("X-Host", "evil.example"),
                                               ("Forwarded", "host=evil.example")])
async def test_forged_forwarding_headers_cannot_poison(interface: Interface, cache: AnyCache,
                                                       header: str, value: str) -> None:
    upstream, app = interface.cached(cache, link_from_host)
    async with interface.client(app) as c:
        attack = await c.get("/page", headers={"Host": "victim.example", header: value})
        victim = await c.get("/page", headers={"Host": "victim.example"})
        victim_again = await c.get("/page", headers={"Host": "victim.example"})
        attack_again = await c.get("/page", headers={"Host": "victim.example", header: value})
    assert attack.content == b'<script src="//evil.example/app.js"></script> #1'
    assert victim.content == b'<script src="//victim.example/app.js"></script> #2'
    assert victim_again.content == victim.content
    assert attack_again.content == attack.content  # the forged entry reaches only itself
    assert upstream.calls == 2


@pytest.mark.parametrize("host", ["victim.example/evil", "victim.example@evil.example",
                                  "a b", "victim.example:99999", "_x_"])
async def test_an_invalid_host_bypasses(interface: Interface, cache: AnyCache,
                                        host: str) -> None:
    upstream, app = interface.cached(cache, link_from_host)
    async with interface.client(app) as c:
        responses = [await c.get("/page", headers={"Host": host}) for _ in range(2)]
    assert upstream.calls == 2
    assert [r.content for r in responses] == [
        f'<script src="//{host}/app.js"></script> #{n}'.encode() for n in (1, 2)]
    assert status_of(responses[0]) == {"fwd": "bypass", "detail": "host", "fwd-status": 200}


async def test_allowed_hosts_restrict_the_cache(interface: Interface, cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, link_from_host, allowed_hosts=["Victim.example"])
    async with interface.client(app) as c:
        other = [(await c.get("/p", headers={"Host": "other.example"})).content
                 for _ in range(2)]
        victim = [(await c.get("/p", headers={"Host": "victim.example"})).content
                  for _ in range(2)]
    assert other == [b'<script src="//other.example/app.js"></script> #1',
                     b'<script src="//other.example/app.js"></script> #2']
    assert victim == [b'<script src="//victim.example/app.js"></script> #3'] * 2
    assert upstream.calls == 3


async def test_host_case_and_default_port_are_one_entry(interface: Interface,
                                                        cache: AnyCache) -> None:
    upstream, app = interface.cached(cache)
    async with interface.client(app) as c:
        bodies = [(await c.get("/p", headers={"Host": host})).content
                  for host in ("example.com", "EXAMPLE.com:80", "example.com.")]
        other_port = await c.get("/p", headers={"Host": "example.com:8080"})
    assert bodies == [b"GET /p? #1"] * 3
    assert other_port.content == b"GET /p? #2"
    assert upstream.calls == 2


async def test_scheme_is_part_of_the_key(interface: Interface, cache: AnyCache) -> None:
    upstream, app = interface.cached(cache)
    async with interface.client(app, "http://example.com") as plain, \
            interface.client(app, "https://example.com") as tls:
        bodies = [(await plain.get("/p")).content, (await tls.get("/p")).content,
                  (await plain.get("/p")).content, (await tls.get("/p")).content]
    assert bodies == [b"GET /p? #1", b"GET /p? #2", b"GET /p? #1", b"GET /p? #2"]
    assert upstream.calls == 2


async def test_query_order_is_irrelevant(interface: Interface, cache: AnyCache) -> None:
    """The order of different names is irrelevant; the order of a repeated name's values
    is not (frameworks read the first or the last)."""
    upstream, app = interface.cached(cache)
    async with interface.client(app) as c:
        first = await c.get("/q?a=1&b=2&b=3")
        reordered = await c.get("/q?b=2&a=1&b=3")
        spelled = await c.get("/q?b=2&a=%31&b=3")
        different = await c.get("/q?a=1&b=3&b=4")
        swapped_values = await c.get("/q?a=1&b=3&b=2")  # same multiset, b's order swapped
    assert reordered.content == spelled.content == first.content == b"GET /q?a=1&b=2&b=3 #1"
    assert swapped_values.content == b"GET /q?a=1&b=3&b=2 #3"
    assert different.content == b"GET /q?a=1&b=3&b=4 #2"
    assert upstream.calls == 3


async def test_every_vary_value_is_its_own_entry(interface: Interface, cache: AnyCache) -> None:
    """Absent, empty, "a" and "b" are four entries; each served only its own body."""
    upstream, app = interface.cached(cache, with_vary)
    variants: list[dict[str, str]] = [{}, {"X-Variant": ""}, {"X-Variant": "a"},
                                      {"X-Variant": "b"}]
    async with interface.client(app) as c:
        first = [(await c.get("/v", headers=h)).content for h in variants]
        again = [await c.get("/v", headers=h) for h in variants]
        ignored = await c.get("/v", headers={"X-Variant": "a", "X-Not-Varied": "1"})
    assert first == [b"/v? None #1", b"/v?  #2", b"/v? a #3", b"/v? b #4"]
    assert [r.content for r in again] == first
    assert all(is_hit(r) for r in again)
    assert ignored.content == b"/v? a #3"
    assert upstream.calls == 4


async def test_two_mounted_apps_on_one_store_keep_their_own_entries(
        interface: Interface, cache: AnyCache) -> None:
    """The key holds the full path: the ASGI root_path or the WSGI SCRIPT_NAME too."""
    v1, app1 = interface.cached(cache, lambda seen, n: Reply(
        f"v1 #{n}", headers={"Cache-Control": "max-age=60"}), rules=[CacheRule("/items")])
    v2, app2 = interface.cached(cache, lambda seen, n: Reply(
        f"v2 #{n}", headers={"Cache-Control": "max-age=60"}))
    outer = interface.mount({"/v1": app1, "/v2": app2})
    async with interface.client(outer) as c:
        bodies = [(await c.get(p)).content for p in ("/v1/items", "/v2/items") * 2]
    assert bodies == [b"v1 #1", b"v2 #1", b"v1 #1", b"v2 #1"]
    assert (v1.calls, v2.calls) == (1, 1)


@pytest.mark.parametrize("interface", INTERFACES, ids=str)
@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["1", "2", "x y"])),
                      min_size=1, max_size=5, unique=True),
       variants=st.lists(st.one_of(st.none(), st.sampled_from(["", "a", "b"])),
                         min_size=1, max_size=6),
       data=st.data())
def test_key_normalisation_through_the_middleware(interface: Interface,
                                                  pairs: list[tuple[str, str]],
                                                  variants: list[str | None],
                                                  data: st.DataObject) -> None:
    """The same request with its headers and query pairs in any order (each repeated
    name's values in their order) is one entry; different Vary'd values are different
    entries (absent ≠ empty)."""

    async def scenario() -> None:
        upstream, app = interface.cached(interface.memory_cache(), with_vary)
        async with interface.client(app) as c:
            served: dict[str | None, bytes] = {}
            for variant in variants:
                order = keep_repeats(pairs, data.draw(st.permutations(pairs)))
                query = "&".join(f"{k}={v.replace(' ', data.draw(st.sampled_from(['+', '%20'])))}"
                                 for k, v in order)
                headers = [("X-Other", "1"), ("Accept", "*/*")]
                if variant is not None:
                    headers.append(("X-Variant", variant))
                headers = data.draw(st.permutations(headers))
                body = (await c.get(f"/k?{query}", headers=headers)).content
                assert body.split(b" #")[0].endswith(f" {variant}".encode())
                assert served.setdefault(variant, body) == body
        assert upstream.calls == len(set(variants))

    asyncio.run(scenario())


# --- 6. statuses ------------------------------------------------------------------------


def with_status(status: int) -> Respond:
    def respond(seen: Seen, n: int) -> Reply:
        headers = {"Cache-Control": "max-age=60"}
        if 300 <= status < 400:
            headers["Location"] = f"/elsewhere/{n}"
        if status == 429:
            headers["Retry-After"] = "30"
        body = b"" if status == 204 else f"{status} #{n}".encode()
        return Reply(body, status, headers)
    return respond


@pytest.mark.parametrize("status", CACHEABLE)
async def test_listed_statuses_are_stored(interface: Interface, cache: AnyCache,
                                          status: int) -> None:
    upstream, app = interface.cached(cache, with_status(status))
    async with interface.client(app) as c:
        first = await c.get("/s")
        second = await c.get("/s")
    assert upstream.calls == 1
    assert first.status_code == second.status_code == status
    assert second.content == first.content == (b"" if status == 204 else f"{status} #1".encode())
    assert is_hit(second)
    if 300 <= status < 400:
        assert second.headers["location"] == "/elsewhere/1"


@pytest.mark.parametrize("status", NOT_CACHEABLE)
async def test_other_statuses_are_never_stored(interface: Interface, cache: AnyCache,
                                               status: int) -> None:
    upstream, app = interface.cached(cache, with_status(status))
    async with interface.client(app) as c:
        responses = [await c.get("/s") for _ in range(2)]
    assert upstream.calls == 2
    assert [r.content for r in responses] == [f"{status} #1".encode(), f"{status} #2".encode()]
    assert [r.status_code for r in responses] == [status, status]


# --- 7. hop-by-hop and quota fields; the order with the rate limiter ------------------

PER_HOP = {"Keep-Alive": "timeout=5", "Connection": "X-Hop", "X-Hop": "secret",
           "Upgrade": "h2c", "Proxy-Connection": "keep-alive", "TE": "trailers",
           "Trailer": "X-T", "RateLimit": '"app";r=7;t=9', "RateLimit-Policy": '"app";q=9',
           "RateLimit-Remaining": "7", "X-RateLimit-Limit": "9", "X-RateLimit-Remaining": "7",
           "X-RateLimit-Reset": "99", "X-RateLimit-Used": "2", "Retry-After": "9"}


async def test_hop_by_hop_and_quota_fields_are_never_stored(interface: Interface,
                                                            cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, lambda seen, n: Reply(
        f"#{n}", headers={"Cache-Control": "max-age=60", "X-Kept": "yes", **PER_HOP}))
    async with interface.client(app) as c:
        miss = await c.get("/x")
        hit = await c.get("/x")
    assert upstream.calls == 1
    assert miss.content == hit.content == b"#1"
    assert all(miss.headers.get(name) == value for name, value in PER_HOP.items())
    assert is_hit(hit)
    assert hit.headers["x-kept"] == "yes"
    assert [name for name in PER_HOP if name in hit.headers] == []
    blobs = await stored_values(cache)
    assert any("IzE=" in b for b in blobs)  # the entry: body "#1", base64
    assert not any(word in b.lower() for b in blobs
                   for word in ("ratelimit", "retry-after", "keep-alive", "secret", "h2c"))


def quota(response: httpx.Response) -> int:
    """The remaining quota, from X-RateLimit-Remaining and from RateLimit (parsed)."""
    [(_, params)] = http_sf.parse(response.headers["ratelimit"].encode(), tltype="list")
    assert int(response.headers["x-ratelimit-remaining"]) == params["r"]
    return int(params["r"])


async def test_limiter_outside_the_cache_counts_hits_with_current_headers(
        interface: Interface, cache: AnyCache) -> None:
    """The default advice: the rate limiter outside. Hits carry the limiter's current
    quota headers (never the stored ones) and count against the quota."""
    upstream, cache_app = interface.cached(cache)
    app = interface.limiter(cache_app, storage="memory://", default_limits="4/minute")
    async with interface.client(app) as c:
        responses = [await c.get("/x") for _ in range(5)]
    assert upstream.calls == 1
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 429]
    assert [r.content for r in responses[:4]] == [b"GET /x? #1"] * 4
    assert [is_hit(r) for r in responses[:4]] == [False, True, True, True]
    assert [quota(r) for r in responses[:4]] == [3, 2, 1, 0]
    assert int(responses[4].headers["retry-after"]) > 0
    assert "cache-status" not in responses[4].headers  # refused before the cache


async def test_limiter_inside_the_cache_does_not_count_hits(interface: Interface,
                                                            cache: AnyCache) -> None:
    """The other order: the cache outside. Only misses reach the limiter; hits are free
    and carry no quota headers (they were not stored, and nothing recomputes them)."""
    upstream = interface.upstream()
    limited = interface.limiter(upstream.app, storage="memory://", default_limits="2/minute")
    app = interface.middleware(limited, cache=cache)
    async with interface.client(app) as c:
        responses = [await c.get("/x") for _ in range(6)]
        second = await c.get("/x", headers={"Cache-Control": "no-cache"})  # a bypass
        third = await c.get("/x", headers={"Cache-Control": "no-cache"})
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.content for r in responses] == [b"GET /x? #1"] * 6
    assert quota(responses[0]) == 1
    assert all("ratelimit" not in r.headers and "x-ratelimit-remaining" not in r.headers
               for r in responses[1:])
    assert quota(second) == 0  # the six requests counted once
    assert third.status_code == 429
    assert upstream.calls == 2


# --- 8. Age, Cache-Status, ETag, 304 ---------------------------------------------------


async def test_age_and_cache_status(interface: Interface, cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, with_vary)
    async with interface.client(app) as c:
        miss = await c.get("/x", headers={"X-Variant": "a"})
        vary_miss = await c.get("/x", headers={"X-Variant": "b"})
        await asyncio.sleep(1.05)
        hit = await c.get("/x", headers={"X-Variant": "a"})
        bypass = await c.get("/x", headers={"Authorization": "x"})
        unsafe = await c.delete("/y")
    assert upstream.calls == 4
    assert status_of(miss) == {"fwd": "uri-miss", "fwd-status": 200}
    assert status_of(vary_miss) == {"fwd": "vary-miss", "fwd-status": 200}
    assert status_of(hit) == {"hit": True, "ttl": 59}
    assert hit.headers["age"] == "1"
    assert hit.content == miss.content == b"/x? a #1"
    assert "age" not in miss.headers
    assert status_of(bypass) == {"fwd": "bypass", "detail": "authorized", "fwd-status": 200}
    assert status_of(unsafe) == {"fwd": "method", "fwd-status": 200}


@pytest.mark.parametrize("fresh_by", ["max-age", "default_ttl"])
async def test_etag_is_deterministic_across_caches(interface: Interface, cache: AnyCache,
                                                   redis_url: str, fresh_by: str) -> None:
    """Two stores, the same body: the same ETag (the response fresh by its own max-age, or
    by the middleware's default_ttl)."""
    other_cache = (interface.memory_cache() if isinstance(cache, AsyncMemoryCache | MemoryCache)
                   else interface.redis_cache(redis_url, prefix="rlmw:other"))
    headers = {"Cache-Control": "max-age=60"} if fresh_by == "max-age" else {}
    options: dict[str, Any] = {} if fresh_by == "max-age" else {"default_ttl": 60}
    try:
        def same(seen: Seen, n: int) -> Reply:
            return Reply("same body", headers=headers)

        first_up, first = interface.cached(cache, same, **options)
        second_up, second = interface.cached(other_cache, same, **options)
        async with interface.client(first) as a, interface.client(second) as b:
            await a.get("/x")
            await b.get("/x")
            tags = [(await a.get("/x")).headers["etag"], (await b.get("/x")).headers["etag"]]
    finally:
        await interface.close(other_cache)
    assert (first_up.calls, second_up.calls) == (1, 1)
    assert tags[0] == tags[1] == etag_for(b"same body")


@pytest.mark.parametrize("form", ["{}", "W/{}", '"other", {}', '"other",W/{} ', "*"])
async def test_if_none_match_gives_304(interface: Interface, cache: AnyCache,
                                       form: str) -> None:
    upstream, app = interface.cached(cache)
    async with interface.client(app) as c:
        await c.get("/x")
        etag = (await c.get("/x")).headers["etag"]
        not_modified = await c.get("/x", headers={"If-None-Match": form.format(etag)})
        changed = await c.get("/x", headers={"If-None-Match": '"other"'})
    assert upstream.calls == 1
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert "content-length" not in not_modified.headers
    assert is_hit(not_modified)
    assert (changed.status_code, changed.content) == (200, b"GET /x? #1")


async def test_if_none_match_star_on_a_cached_404_is_the_404(interface: Interface,
                                                             cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, with_status(404))
    async with interface.client(app) as c:
        await c.get("/gone")
        response = await c.get("/gone", headers={"If-None-Match": "*"})
    assert upstream.calls == 1
    assert (response.status_code, response.content) == (404, b"404 #1")


# --- 10. bounded bodies ------------------------------------------------------------------


def streamed(chunks: int, size: int) -> Respond:
    return lambda seen, n: Reply(chunked(chunks, size, n),
                                 headers={"Cache-Control": "max-age=60"})


def chunked(chunks: int, size: int, n: int) -> list[bytes]:
    """*chunks* chunks of *size* bytes, their letters shifted by the call number *n*."""
    return [bytes([65 + (n + i) % 26]) * size for i in range(chunks)]


def expected_stream(n: int, chunks: int, size: int) -> bytes:
    return b"".join(chunked(chunks, size, n))


async def test_a_large_streamed_response_passes_through_and_is_not_stored(
        interface: Interface, cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, streamed(5, 400), max_body_size=1000)
    async with interface.client(app) as c:
        first = await c.get("/big")
        second = await c.get("/big")
    assert upstream.calls == 2
    assert first.content == expected_stream(1, 5, 400)
    assert second.content == expected_stream(2, 5, 400)
    assert len(second.content) == 2000
    assert await stored_values(cache) == []


@pytest.mark.parametrize(("chunks", "size"), [(5, 10), (4, 250)])
async def test_a_small_streamed_response_is_stored(interface: Interface, cache: AnyCache,
                                                   chunks: int, size: int) -> None:
    upstream, app = interface.cached(cache, streamed(chunks, size), max_body_size=1000)
    async with interface.client(app) as c:
        first = await c.get("/small")
        second = await c.get("/small")
    assert upstream.calls == 1
    assert first.content == second.content == expected_stream(1, chunks, size)
    assert is_hit(second)


# --- the store failing or damaged --------------------------------------------------------


@pytest.mark.parametrize("garbage", [b"not json", b"\x80\x04\x95pickle", b"[1, 2]",
                                     b'{"v": 1, "status": 200}', b'{"vary": 5}',
                                     b'{"v":1,"status":299,"headers":[],"body":"","stored_at":'
                                     b'0,"ttl":60,"etag":""}'])
@pytest.mark.parametrize("which", ["entry", "record"])
async def test_a_damaged_entry_is_a_miss(interface: Interface, cache: AnyCache,
                                         garbage: bytes, which: str) -> None:
    upstream, app = interface.cached(cache, with_vary)
    async with interface.client(app) as c:
        first = await c.get("/x", headers={"X-Variant": "a"})
        assert await overwrite(cache, which, garbage) == 1
        damaged = await c.get("/x", headers={"X-Variant": "a"})
        again = await c.get("/x", headers={"X-Variant": "a"})
    assert first.content == b"/x? a #1"
    assert damaged.status_code == 200
    assert damaged.content == b"/x? a #2"
    assert again.content == b"/x? a #2"  # stored again over the damage
    assert upstream.calls == 2


@pytest.mark.parametrize("interface", INTERFACES, ids=str)
async def test_redis_outage_keeps_answering(interface: Interface, private_redis: PrivateRedis,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """A killed Redis: every request still answered by the app at once (no lock wait),
    the breaker logs once; when Redis is back, caching resumes."""
    caplog.set_level(logging.WARNING, logger="ratelimit_mw.breaker")
    cache = interface.redis_cache(private_redis.url)
    upstream, app = interface.cached(cache)
    try:
        async with interface.client(app) as c:
            assert [(await c.get("/x")).content for _ in range(2)] == [b"GET /x? #1"] * 2
            private_redis.kill()
            timings = []
            for _ in range(6):
                started = time.monotonic()
                response = await c.get("/x")
                timings.append(time.monotonic() - started)
                assert response.status_code == 200
                assert response.content == f"GET /x? #{upstream.calls}".encode()
            assert upstream.calls == 7
            assert max(timings) < 1.0, timings
            assert status_of(response) == {"fwd": "miss", "detail": "cache-down", "fwd-status": 200}
            down = [r for r in caplog.records if "failed" in r.getMessage()]
            assert len(down) == 1
            private_redis.start()
            await asyncio.sleep(0.6)  # the breaker's first back-off
            bodies = [(await c.get("/y")).content for _ in range(3)]
    finally:
        await interface.close(cache)
    assert bodies == [b"GET /y? #8"] * 3
    assert upstream.calls == 8
    assert len([r for r in caplog.records if "answering again" in r.getMessage()]) == 1


@pytest.mark.parametrize("interface", INTERFACES, ids=str)
async def test_a_paused_redis_costs_one_timeout(interface: Interface,
                                                private_redis: PrivateRedis) -> None:
    """SIGSTOP: Redis keeps its sockets but answers nothing. The first request pays the
    socket timeout, the breaker opens, the next ones go straight to the app."""
    cache = interface.redis_cache(private_redis.url)
    upstream, app = interface.cached(cache)
    try:
        async with interface.client(app) as c:
            await c.get("/x")
            private_redis.pause()
            started = time.monotonic()
            bodies = [(await c.get("/x")).content for _ in range(5)]
            elapsed = time.monotonic() - started
            private_redis.resume()
    finally:
        await interface.close(cache)
    assert bodies == [f"GET /x? #{n}".encode() for n in range(2, 7)]
    assert upstream.calls == 6
    assert elapsed < 2.5, elapsed
