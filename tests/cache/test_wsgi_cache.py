"""WSGIResponseCacheMiddleware in front of a real Flask app, through httpx, on the memory
store and a real Redis: one test per rule of DESIGN.md §6, each showing how many times
the handler ran and the bytes every client was served."""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import flask
import http_sf
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from ratelimit_mw import WSGIRateLimitMiddleware
from ratelimit_mw._types import Environ, StartResponse
from ratelimit_mw.cache import CacheRule, MemoryCache, RedisCache, WSGIResponseCacheMiddleware
from ratelimit_mw.cache._http import etag_for
from tests.redis_server import PrivateRedis

SyncCache = RedisCache | MemoryCache
Respond = Callable[[flask.Request, int], flask.Response]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CACHEABLE = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]
NOT_CACHEABLE = [201, 206, 302, 303, 307, 429, 500, 502, 503]


def numbered(request: flask.Request, n: int) -> flask.Response:
    """The default answer: says which call made it, fresh for a minute."""
    query = request.query_string.decode()
    return flask.Response(f"{request.method} {request.path}?{query} #{n}",
                          headers={"Cache-Control": "max-age=60"}, mimetype="text/plain")


class Upstream:
    """A Flask app whose one view (every path, every method) counts its calls, under a
    lock (threaded tests), and answers what the test's *respond* says."""

    def __init__(self, respond: Respond = numbered) -> None:
        self.calls = 0
        self.respond = respond
        self._lock = threading.Lock()
        app = flask.Flask(__name__)
        app.add_url_rule("/", "root", self.view, methods=METHODS, defaults={"path": ""})
        app.add_url_rule("/<path:path>", "any", self.view, methods=METHODS)
        self.app = app

    def view(self, path: str) -> flask.Response:
        with self._lock:
            self.calls += 1
            n = self.calls
        return self.respond(flask.request, n)


def cached(cache: SyncCache, respond: Respond = numbered, **options: Any,
           ) -> tuple[Upstream, WSGIResponseCacheMiddleware]:
    upstream = Upstream(respond)
    return upstream, WSGIResponseCacheMiddleware(upstream.app.wsgi_app, cache=cache, **options)


def client(app: Any, base_url: str = "http://testserver") -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url=base_url)


def status_of(response: httpx.Response) -> dict[str, Any]:
    """The Cache-Status member of this cache, parsed as RFC 9211/9651 say."""
    parsed = http_sf.parse(response.headers["cache-status"].encode(), tltype="list")
    assert len(parsed) == 1
    item, params = parsed[0]
    assert str(item) == "ratelimit-mw"
    return {k: str(v) if not isinstance(v, bool | int) else v for k, v in params.items()}


def is_hit(response: httpx.Response) -> bool:
    return status_of(response).get("hit") is True


def stored_values(cache: SyncCache) -> list[str]:
    """Every value in the store, raw (JSON text), for looking at what was kept."""
    if isinstance(cache, MemoryCache):
        return [raw for _, raw in cache._data.values()]
    return [cache.client.get(key).decode() for key in cache.client.scan_iter(
        match="rlmw:cache:*") if cache.client.type(key) == b"string"]


def overwrite(cache: SyncCache, which: str, raw: bytes) -> int:
    """Replace every stored entry (``which="entry"``) or URI record (``"record"``) by *raw*."""
    def chosen(key: str) -> bool:
        if key.endswith(("#tag", ":lock")):
            return False
        return (":v" in key.rsplit("#", 1)[1]) is (which == "entry")

    if isinstance(cache, MemoryCache):
        keys = [k for k in cache._data if chosen(k)]
        for key in keys:
            cache._data[key] = (cache._data[key][0], raw.decode("latin-1"))
        return len(keys)
    keys = [k for k in cache.client.scan_iter(match="rlmw:cache:*") if chosen(k.decode())]
    for key in keys:
        cache.client.set(key, raw, keepttl=True)
    return len(keys)


# --- 1. GET only; HEAD from GET; unsafe methods invalidate ----------------------------


def test_get_is_stored_and_served(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache)
    with client(app) as c:
        first = c.get("/items/1")
        second = c.get("/items/1")
    assert upstream.calls == 1
    assert first.content == second.content == b"GET /items/1? #1"
    assert not is_hit(first)
    assert is_hit(second)


def test_head_is_served_from_the_get_entry(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache)
    with client(app) as c:
        c.get("/items/1")
        get = c.get("/items/1")
        head = c.head("/items/1")
    assert upstream.calls == 1
    assert is_hit(head)
    assert head.content == b""
    assert get.content == b"GET /items/1? #1"

    def fields(response: httpx.Response) -> list[tuple[str, str]]:
        return [(n, v) for n, v in response.headers.multi_items()
                if n not in ("age", "cache-status")]

    assert fields(head) == fields(get)
    assert head.headers["content-length"] == str(len(get.content))


def test_a_head_miss_is_not_stored(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache)
    with client(app) as c:
        head = c.head("/items/1")
        first = c.get("/items/1")
        second = c.get("/items/1")
    assert upstream.calls == 2
    assert head.content == b""
    assert first.content == second.content == b"GET /items/1? #2"


def with_vary(request: flask.Request, n: int) -> flask.Response:
    variant = request.headers.get("x-variant")
    return flask.Response(f"{request.path}?{request.query_string.decode()} {variant} #{n}",
                          headers={"Cache-Control": "max-age=60", "Vary": "X-Variant"})


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_successful_unsafe_request_invalidates_the_uri(sync_cache: SyncCache,
                                                         method: str) -> None:
    upstream, app = cached(sync_cache, with_vary)
    requests = [("/items/1?x=1", "a"), ("/items/1?x=2", "a"), ("/items/1", "b"),
                ("/items/1", None)]
    with client(app) as c:

        def bodies() -> list[bytes]:
            return [c.get(url, headers={"X-Variant": v} if v else {}).content
                    for url, v in requests]

        before = bodies()
        other = c.get("/items/2").content
        assert upstream.calls == 5
        assert bodies() == before
        unsafe = c.request(method, "/items/1")
        assert unsafe.status_code == 200
        assert status_of(unsafe)["fwd"] == "method"
        assert upstream.calls == 6
        after = bodies()
        assert upstream.calls == 10
        assert after == [b"/items/1?x=1 a #7", b"/items/1?x=2 a #8", b"/items/1? b #9",
                         b"/items/1? None #10"]
        assert c.get("/items/2").content == other
    assert upstream.calls == 10


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 500, 503])
def test_a_failed_unsafe_request_does_not_invalidate(sync_cache: SyncCache,
                                                     status: int) -> None:
    def respond(request: flask.Request, n: int) -> flask.Response:
        if request.method == "POST":
            return flask.Response("no", status=status)
        return numbered(request, n)

    upstream, app = cached(sync_cache, respond)
    with client(app) as c:
        first = c.get("/items/1")
        assert c.post("/items/1").status_code == status
        again = c.get("/items/1")
    assert upstream.calls == 2
    assert again.content == first.content == b"GET /items/1? #1"
    assert is_hit(again)


def test_options_does_not_invalidate(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache)
    with client(app) as c:
        first = c.get("/items/1")
        assert c.options("/items/1").status_code == 200
        again = c.get("/items/1")
    assert upstream.calls == 2
    assert again.content == first.content


def test_invalidate_methods(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache)
    urls = ("/a?x=1", "/a?x=2", "/ab", "/b")
    with client(app) as c:
        for url in urls:
            c.get(url)
        assert upstream.calls == 4
        assert app.invalidate("testserver", "/a") == 4  # 2 entries + 2 URI records
        for url in urls:
            c.get(url)
        assert upstream.calls == 6
        assert app.invalidate_prefix("testserver", "/a") > 0  # /a and /ab
        for url in urls:
            c.get(url)
        assert upstream.calls == 9
        assert app.invalidate("not a host", "/a") == 0


# --- 2. no-store / private / max-age / s-maxage / request directives -----------------


def fixed_cc(cc: str) -> Respond:
    return lambda request, n: flask.Response(f"#{n}", headers={"Cache-Control": cc})


@pytest.mark.parametrize("cc", ["no-store", "NO-STORE, max-age=60", "private",
                                "Private, max-age=60", "max-age=60, PRIVATE", "no-cache",
                                "max-age=0"])
def test_not_stored(sync_cache: SyncCache, cc: str) -> None:
    upstream, app = cached(sync_cache, fixed_cc(cc))
    with client(app) as c:
        bodies = [c.get("/x").content for _ in range(3)]
    assert upstream.calls == 3
    assert bodies == [b"#1", b"#2", b"#3"]


@pytest.mark.parametrize("cc", ["max-age=60", "MAX-AGE=60", "Public, Max-Age=60",
                                "s-maxage=60", "S-MAXAGE=60", 'max-age="60"'])
def test_stored_whatever_the_case(sync_cache: SyncCache, cc: str) -> None:
    upstream, app = cached(sync_cache, fixed_cc(cc))
    with client(app) as c:
        bodies = [c.get("/x").content for _ in range(3)]
    assert upstream.calls == 1
    assert bodies == [b"#1"] * 3


def test_max_age_and_s_maxage_expire_entries(sync_cache: SyncCache) -> None:
    ages = {"/short": "max-age=60, s-maxage=1", "/long": "max-age=1, s-maxage=60",
            "/plain": "MAX-AGE=1"}
    upstream, app = cached(sync_cache, lambda r, n: flask.Response(
        f"{r.path} #{n}", headers={"Cache-Control": ages[r.path]}))
    with client(app) as c:
        first = {p: c.get(p).content for p in ages}
        again = {p: c.get(p).content for p in ages}
        assert upstream.calls == 3
        assert again == first
        time.sleep(1.1)
        later = {p: c.get(p).content for p in ages}
    assert upstream.calls == 5
    assert later == {"/short": b"/short #4", "/long": b"/long #2", "/plain": b"/plain #5"}


def test_rule_ttl_is_the_default_freshness(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, lambda r, n: flask.Response(f"#{n}"),
                           rules=[CacheRule("/ruled/{id}", ttl=60),
                                  CacheRule("/exempt", exempt=True)])
    with client(app) as c:
        ruled = [c.get("/ruled/1").content for _ in range(2)]
        unruled = [c.get("/other").content for _ in range(2)]
        exempt = [c.get("/exempt") for _ in range(2)]
    assert ruled == [b"#1", b"#1"]
    assert unruled == [b"#2", b"#3"]
    assert [r.content for r in exempt] == [b"#4", b"#5"]
    assert status_of(exempt[0]) == {"fwd": "bypass", "detail": "exempt"}
    assert upstream.calls == 5


def test_an_expires_in_the_past_beats_the_rules_ttl(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, lambda r, n: flask.Response(
        f"#{n}", headers={"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}),
        rules=[CacheRule("/{rest:path}", ttl=60)])
    with client(app) as c:
        bodies = [c.get("/x").content for _ in range(2)]
    assert bodies == [b"#1", b"#2"]
    assert upstream.calls == 2


@pytest.mark.parametrize("cc", ["no-cache", "No-Cache", "no-store", "max-age=0, NO-STORE"])
def test_request_no_cache_bypasses(sync_cache: SyncCache, cc: str) -> None:
    upstream, app = cached(sync_cache)
    with client(app) as c:
        first = c.get("/x")
        bypassed = c.get("/x", headers={"Cache-Control": cc})
        again = c.get("/x")
    assert upstream.calls == 2
    assert bypassed.content == b"GET /x? #2"
    assert status_of(bypassed) == {"fwd": "bypass", "detail": "request-no-cache"}
    assert again.content == first.content == b"GET /x? #1"


# --- 3. Authorization / Cookie --------------------------------------------------------


def greeting(cc: str) -> Respond:
    def respond(request: flask.Request, n: int) -> flask.Response:
        who = request.headers.get("authorization") or request.headers.get("cookie") or "anon"
        return flask.Response(f"hello {who} #{n}", headers={"Cache-Control": cc})
    return respond


@pytest.mark.parametrize("credential", ["Authorization", "Cookie"])
def test_credentials_bypass_the_cache(sync_cache: SyncCache, credential: str) -> None:
    upstream, app = cached(sync_cache, greeting("public, max-age=60"))
    secret = {credential: "alice-secret"}
    with client(app) as c:
        mine = [c.get("/me", headers=secret) for _ in range(2)]
        anon = [c.get("/me").content for _ in range(2)]
        mine_again = c.get("/me", headers=secret)
    assert [r.content for r in mine] == [b"hello alice-secret #1", b"hello alice-secret #2"]
    assert status_of(mine[0]) == {"fwd": "bypass", "detail": "authorized"}
    assert anon == [b"hello anon #3", b"hello anon #3"]
    assert mine_again.content == b"hello alice-secret #4"
    assert upstream.calls == 4


@pytest.mark.parametrize("cc", ["public, max-age=60", "s-maxage=60"])
def test_opt_in_shares_public_responses(sync_cache: SyncCache, cc: str) -> None:
    upstream, app = cached(sync_cache, greeting(cc),
                           rules=[CacheRule("/catalog/{rest:path}", allow_authorized=True)])
    with client(app) as c:
        first = c.get("/catalog/a", headers={"Authorization": "Bearer t"})
        anon = c.get("/catalog/a")
        other = c.get("/catalog/a", headers={"Cookie": "sid=2"})
    assert upstream.calls == 1
    assert first.content == anon.content == other.content == b"hello Bearer t #1"
    assert is_hit(anon)
    assert is_hit(other)


@pytest.mark.parametrize("cc", ["max-age=60", "public, private, max-age=60"])
def test_opt_in_never_stores_a_non_public_response(sync_cache: SyncCache, cc: str) -> None:
    upstream, app = cached(sync_cache, greeting(cc),
                           rules=[CacheRule("/catalog/{rest:path}", allow_authorized=True)])
    with client(app) as c:
        mine = [c.get("/catalog/a", headers={"Authorization": "Bearer t"}).content
                for _ in range(2)]
        anon = c.get("/catalog/a")
    assert mine == [b"hello Bearer t #1", b"hello Bearer t #2"]
    assert anon.content == b"hello anon #3"
    assert upstream.calls == 3


# --- 4. Set-Cookie, Vary: * ------------------------------------------------------------


def test_set_cookie_is_never_stored(sync_cache: SyncCache) -> None:
    def respond(request: flask.Request, n: int) -> flask.Response:
        response = flask.Response(f"#{n}", headers={"Cache-Control": "public, s-maxage=60"})
        response.set_cookie("sid", f"session-{n}")
        return response

    upstream, app = cached(sync_cache, respond)
    with client(app) as c:
        responses = [c.get("/x") for _ in range(3)]
        c.cookies.clear()
    assert upstream.calls == 3
    assert [r.content for r in responses] == [b"#1", b"#2", b"#3"]
    assert [r.cookies["sid"] for r in responses] == ["session-1", "session-2", "session-3"]


@pytest.mark.parametrize("vary", ["*", "Accept, *"])
def test_vary_star_is_never_stored(sync_cache: SyncCache, vary: str) -> None:
    upstream, app = cached(sync_cache, lambda r, n: flask.Response(
        f"#{n}", headers={"Cache-Control": "max-age=60", "Vary": vary}))
    with client(app) as c:
        bodies = [c.get("/x").content for _ in range(2)]
    assert bodies == [b"#1", b"#2"]
    assert upstream.calls == 2


# --- 5. the key ------------------------------------------------------------------------


def link_from_host(request: flask.Request, n: int) -> flask.Response:
    host = (request.headers.get("x-forwarded-host") or request.headers.get("x-host")
            or request.headers["host"])
    forwarded = request.headers.get("forwarded", "")
    if forwarded.startswith("host="):
        host = forwarded[5:]
    return flask.Response(f'<script src="//{host}/app.js"></script> #{n}',
                          headers={"Cache-Control": "max-age=60"})


@pytest.mark.parametrize(("header", "value"), [("X-Forwarded-Host", "evil.example"),
                                               ("X-Host", "evil.example"),
                                               ("Forwarded", "host=evil.example")])
def test_forged_forwarding_headers_cannot_poison(sync_cache: SyncCache, header: str,
                                                 value: str) -> None:
    upstream, app = cached(sync_cache, link_from_host)
    with client(app) as c:
        attack = c.get("/page", headers={"Host": "victim.example", header: value})
        victim = c.get("/page", headers={"Host": "victim.example"})
        victim_again = c.get("/page", headers={"Host": "victim.example"})
        attack_again = c.get("/page", headers={"Host": "victim.example", header: value})
    assert attack.content == b'<script src="//evil.example/app.js"></script> #1'
    assert victim.content == b'<script src="//victim.example/app.js"></script> #2'
    assert victim_again.content == victim.content
    assert attack_again.content == attack.content
    assert upstream.calls == 2


@pytest.mark.parametrize("host", ["victim.example/evil", "victim.example@evil.example",
                                  "a b", "victim.example:99999", "_x_"])
def test_an_invalid_host_bypasses(sync_cache: SyncCache, host: str) -> None:
    upstream, app = cached(sync_cache, link_from_host)
    with client(app) as c:
        responses = [c.get("/page", headers={"Host": host}) for _ in range(2)]
    assert upstream.calls == 2
    assert [r.content for r in responses] == [
        f'<script src="//{host}/app.js"></script> #{n}'.encode() for n in (1, 2)]
    assert status_of(responses[0]) == {"fwd": "bypass", "detail": "host"}


def test_allowed_hosts_restrict_the_cache(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, link_from_host, allowed_hosts=["Victim.example"])
    with client(app) as c:
        other = [c.get("/p", headers={"Host": "other.example"}).content for _ in range(2)]
        victim = [c.get("/p", headers={"Host": "victim.example"}).content for _ in range(2)]
    assert other == [b'<script src="//other.example/app.js"></script> #1',
                     b'<script src="//other.example/app.js"></script> #2']
    assert victim == [b'<script src="//victim.example/app.js"></script> #3'] * 2
    assert upstream.calls == 3


def test_host_case_and_default_port_are_one_entry(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache)
    with client(app) as c:
        bodies = [c.get("/p", headers={"Host": host}).content
                  for host in ("example.com", "EXAMPLE.com:80", "example.com.")]
        other_port = c.get("/p", headers={"Host": "example.com:8080"})
    assert bodies == [b"GET /p? #1"] * 3
    assert other_port.content == b"GET /p? #2"
    assert upstream.calls == 2


def test_scheme_is_part_of_the_key(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache)
    with client(app, "http://example.com") as plain, client(app, "https://example.com") as tls:
        bodies = [plain.get("/p").content, tls.get("/p").content, plain.get("/p").content,
                  tls.get("/p").content]
    assert bodies == [b"GET /p? #1", b"GET /p? #2", b"GET /p? #1", b"GET /p? #2"]
    assert upstream.calls == 2


def test_query_order_is_irrelevant(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache)
    with client(app) as c:
        first = c.get("/q?a=1&b=2&b=3")
        reordered = c.get("/q?b=2&a=1&b=3")
        spelled = c.get("/q?b=2&a=%31&b=3")
        different = c.get("/q?a=1&b=3&b=4")
    assert reordered.content == spelled.content == first.content == b"GET /q?a=1&b=2&b=3 #1"
    assert different.content == b"GET /q?a=1&b=3&b=4 #2"
    assert upstream.calls == 2


def test_every_vary_value_is_its_own_entry(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, with_vary)
    variants: list[dict[str, str]] = [{}, {"X-Variant": ""}, {"X-Variant": "a"},
                                      {"X-Variant": "b"}]
    with client(app) as c:
        first = [c.get("/v", headers=h).content for h in variants]
        again = [c.get("/v", headers=h) for h in variants]
        ignored = c.get("/v", headers={"X-Variant": "a", "X-Not-Varied": "1"})
    assert first == [b"/v? None #1", b"/v?  #2", b"/v? a #3", b"/v? b #4"]
    assert [r.content for r in again] == first
    assert all(is_hit(r) for r in again)
    assert ignored.content == b"/v? a #3"
    assert upstream.calls == 4


def test_two_mounted_apps_on_one_store_keep_their_own_entries(sync_cache: SyncCache) -> None:
    """The key holds the full path: SCRIPT_NAME too."""
    v1, app1 = cached(sync_cache, lambda r, n: flask.Response(
        f"v1 #{n}", headers={"Cache-Control": "max-age=60"}), rules=[CacheRule("/items")])
    v2, app2 = cached(sync_cache, lambda r, n: flask.Response(
        f"v2 #{n}", headers={"Cache-Control": "max-age=60"}))
    outer = DispatcherMiddleware(Upstream().app.wsgi_app, {"/v1": app1, "/v2": app2})
    with client(outer) as c:
        bodies = [c.get(p).content for p in ("/v1/items", "/v2/items") * 2]
    assert bodies == [b"v1 #1", b"v2 #1", b"v1 #1", b"v2 #1"]
    assert (v1.calls, v2.calls) == (1, 1)


@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["1", "2", "x y"])),
                      min_size=1, max_size=5, unique=True),
       variants=st.lists(st.one_of(st.none(), st.sampled_from(["", "a", "b"])),
                         min_size=1, max_size=6),
       data=st.data())
def test_key_normalisation_through_the_middleware(pairs: list[tuple[str, str]],
                                                  variants: list[str | None],
                                                  data: st.DataObject) -> None:
    """The same request with its headers and query pairs in any order is one entry;
    different Vary'd values are different entries (absent ≠ empty)."""
    upstream, app = cached(MemoryCache(), with_vary)
    served: dict[str | None, bytes] = {}
    with client(app) as c:
        for variant in variants:
            order = data.draw(st.permutations(pairs))
            query = "&".join(f"{k}={v.replace(' ', data.draw(st.sampled_from(['+', '%20'])))}"
                             for k, v in order)
            headers = [("X-Other", "1"), ("Accept", "*/*")]
            if variant is not None:
                headers.append(("X-Variant", variant))
            body = c.get(f"/k?{query}", headers=data.draw(st.permutations(headers))).content
            assert body.split(b" #")[0].endswith(f" {variant}".encode())
            assert served.setdefault(variant, body) == body
    assert upstream.calls == len(set(variants))


# --- 6. statuses ------------------------------------------------------------------------


def with_status(status: int) -> Respond:
    def respond(request: flask.Request, n: int) -> flask.Response:
        headers = {"Cache-Control": "max-age=60"}
        if 300 <= status < 400:
            headers["Location"] = f"/elsewhere/{n}"
        if status == 429:
            headers["Retry-After"] = "30"
        body = b"" if status == 204 else f"{status} #{n}".encode()
        return flask.Response(body, status=status, headers=headers)
    return respond


@pytest.mark.parametrize("status", CACHEABLE)
def test_listed_statuses_are_stored(sync_cache: SyncCache, status: int) -> None:
    upstream, app = cached(sync_cache, with_status(status))
    with client(app) as c:
        first = c.get("/s")
        second = c.get("/s")
    assert upstream.calls == 1
    assert first.status_code == second.status_code == status
    assert second.content == first.content == (b"" if status == 204 else f"{status} #1".encode())
    assert is_hit(second)
    if 300 <= status < 400:
        assert second.headers["location"] == "/elsewhere/1"


@pytest.mark.parametrize("status", NOT_CACHEABLE)
def test_other_statuses_are_never_stored(sync_cache: SyncCache, status: int) -> None:
    upstream, app = cached(sync_cache, with_status(status))
    with client(app) as c:
        responses = [c.get("/s") for _ in range(2)]
    assert upstream.calls == 2
    assert [r.content for r in responses] == [f"{status} #1".encode(), f"{status} #2".encode()]
    assert [r.status_code for r in responses] == [status, status]


# --- 7. hop-by-hop and quota fields; the order with the rate limiter ------------------

PER_HOP = {"Keep-Alive": "timeout=5", "Connection": "X-Hop", "X-Hop": "secret",
           "Upgrade": "h2c", "Proxy-Connection": "keep-alive", "TE": "trailers",
           "Trailer": "X-T", "RateLimit": '"app";r=7;t=9', "RateLimit-Policy": '"app";q=9',
           "RateLimit-Remaining": "7", "X-RateLimit-Limit": "9", "X-RateLimit-Remaining": "7",
           "X-RateLimit-Reset": "99", "X-RateLimit-Used": "2", "Retry-After": "9"}


def test_hop_by_hop_and_quota_fields_are_never_stored(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, lambda r, n: flask.Response(
        f"#{n}", headers={"Cache-Control": "max-age=60", "X-Kept": "yes", **PER_HOP}))
    with client(app) as c:
        miss = c.get("/x")
        hit = c.get("/x")
    assert upstream.calls == 1
    assert miss.content == hit.content == b"#1"
    assert all(miss.headers.get(name) == value for name, value in PER_HOP.items())
    assert is_hit(hit)
    assert hit.headers["x-kept"] == "yes"
    assert [name for name in PER_HOP if name in hit.headers] == []
    blobs = stored_values(sync_cache)
    assert any("IzE=" in b for b in blobs)  # the entry: body "#1", base64
    assert not any(word in b.lower() for b in blobs
                   for word in ("ratelimit", "retry-after", "keep-alive", "secret", "h2c"))


def quota(response: httpx.Response) -> int:
    [(_, params)] = http_sf.parse(response.headers["ratelimit"].encode(), tltype="list")
    assert int(response.headers["x-ratelimit-remaining"]) == params["r"]
    return int(params["r"])


def test_limiter_outside_the_cache_counts_hits_with_current_headers(
        sync_cache: SyncCache) -> None:
    upstream, cache_app = cached(sync_cache)
    app = WSGIRateLimitMiddleware(cache_app, storage="memory://", default_limits="4/minute")
    with client(app) as c:
        responses = [c.get("/x") for _ in range(5)]
    assert upstream.calls == 1
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 429]
    assert [r.content for r in responses[:4]] == [b"GET /x? #1"] * 4
    assert [is_hit(r) for r in responses[:4]] == [False, True, True, True]
    assert [quota(r) for r in responses[:4]] == [3, 2, 1, 0]
    assert int(responses[4].headers["retry-after"]) > 0
    assert "cache-status" not in responses[4].headers


def test_limiter_inside_the_cache_does_not_count_hits(sync_cache: SyncCache) -> None:
    upstream = Upstream()
    limited = WSGIRateLimitMiddleware(upstream.app.wsgi_app, storage="memory://",
                                      default_limits="2/minute")
    app = WSGIResponseCacheMiddleware(limited, cache=sync_cache)
    with client(app) as c:
        responses = [c.get("/x") for _ in range(6)]
        second = c.get("/x", headers={"Cache-Control": "no-cache"})
        third = c.get("/x", headers={"Cache-Control": "no-cache"})
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.content for r in responses] == [b"GET /x? #1"] * 6
    assert quota(responses[0]) == 1
    assert all("ratelimit" not in r.headers and "x-ratelimit-remaining" not in r.headers
               for r in responses[1:])
    assert quota(second) == 0
    assert third.status_code == 429
    assert upstream.calls == 2


# --- 8. Age, Cache-Status, ETag, 304 ---------------------------------------------------


def test_age_and_cache_status(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, with_vary)
    with client(app) as c:
        miss = c.get("/x", headers={"X-Variant": "a"})
        vary_miss = c.get("/x", headers={"X-Variant": "b"})
        time.sleep(1.05)
        hit = c.get("/x", headers={"X-Variant": "a"})
        bypass = c.get("/x", headers={"Authorization": "x"})
        unsafe = c.delete("/y")
    assert upstream.calls == 4
    assert status_of(miss) == {"fwd": "uri-miss"}
    assert status_of(vary_miss) == {"fwd": "vary-miss"}
    assert status_of(hit) == {"hit": True, "ttl": 59}
    assert hit.headers["age"] == "1"
    assert hit.content == miss.content == b"/x? a #1"
    assert "age" not in miss.headers
    assert status_of(bypass) == {"fwd": "bypass", "detail": "authorized"}
    assert status_of(unsafe) == {"fwd": "method"}


def test_etag_is_deterministic_across_caches(sync_cache: SyncCache, redis_url: str) -> None:
    other_cache: SyncCache = (MemoryCache() if isinstance(sync_cache, MemoryCache)
                              else RedisCache(redis_url, prefix="rlmw:other"))
    try:
        first_up, first = cached(sync_cache, lambda r, n: flask.Response("same body"),
                                 default_ttl=60)
        second_up, second = cached(other_cache, lambda r, n: flask.Response("same body"),
                                   default_ttl=60)
        with client(first) as a, client(second) as b:
            a.get("/x")
            b.get("/x")
            tags = [a.get("/x").headers["etag"], b.get("/x").headers["etag"]]
    finally:
        if isinstance(other_cache, RedisCache):
            other_cache.close()
    assert (first_up.calls, second_up.calls) == (1, 1)
    assert tags[0] == tags[1] == etag_for(b"same body")


@pytest.mark.parametrize("form", ["{}", "W/{}", '"other", {}', '"other",W/{} ', "*"])
def test_if_none_match_gives_304(sync_cache: SyncCache, form: str) -> None:
    upstream, app = cached(sync_cache)
    with client(app) as c:
        c.get("/x")
        etag = c.get("/x").headers["etag"]
        not_modified = c.get("/x", headers={"If-None-Match": form.format(etag)})
        changed = c.get("/x", headers={"If-None-Match": '"other"'})
    assert upstream.calls == 1
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert "content-length" not in not_modified.headers
    assert is_hit(not_modified)
    assert (changed.status_code, changed.content) == (200, b"GET /x? #1")


def test_if_none_match_star_on_a_cached_404_is_the_404(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, with_status(404))
    with client(app) as c:
        c.get("/gone")
        response = c.get("/gone", headers={"If-None-Match": "*"})
    assert upstream.calls == 1
    assert (response.status_code, response.content) == (404, b"404 #1")


# --- 9. single flight, threaded ---------------------------------------------------------


def slow(respond: Respond, seconds: float = 0.2) -> Respond:
    def answer(request: flask.Request, n: int) -> flask.Response:
        time.sleep(seconds)
        return respond(request, n)
    return answer


def concurrently(app: Any, requests: list[tuple[str, dict[str, str]]],
                 ) -> list[httpx.Response]:
    """Each request on its own thread (20 workers), all started together."""
    barrier = threading.Barrier(len(requests))

    def one(request: tuple[str, dict[str, str]]) -> httpx.Response:
        with client(app) as c:
            barrier.wait(5)
            return c.get(request[0], headers=request[1])

    with ThreadPoolExecutor(max_workers=20) as pool:
        return list(pool.map(one, requests))


def test_twenty_threads_missing_together_make_one_call(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, slow(numbered))
    responses = concurrently(app, [("/hot", {})] * 20)
    assert upstream.calls == 1
    assert {r.content for r in responses} == {b"GET /hot? #1"}
    assert sum(status_of(r).get("collapsed") is True for r in responses) == 19


def test_concurrent_variants_are_never_shared(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, slow(with_vary))
    variants = ["a", "b"] * 10
    responses = concurrently(app, [("/v", {"X-Variant": v}) for v in variants])
    assert upstream.calls == 2
    for variant, response in zip(variants, responses, strict=True):
        assert response.content.startswith(f"/v? {variant} #".encode())


def test_a_head_miss_does_not_hold_the_lock(sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, slow(numbered))
    with ThreadPoolExecutor(max_workers=1) as pool:
        def head_request() -> httpx.Response:
            with client(app) as c:
                return c.head("/hot")

        head = pool.submit(head_request)
        time.sleep(0.05)
        gets = concurrently(app, [("/hot", {})] * 10)
        assert head.result().status_code == 200
    assert upstream.calls == 2  # the HEAD, and one GET for all ten
    assert {r.content for r in gets} == {b"GET /hot? #2"}


def test_concurrent_private_responses_are_never_shared(sync_cache: SyncCache) -> None:
    def private(request: flask.Request, n: int) -> flask.Response:
        return flask.Response(f"secret of {request.headers['x-user']}",
                              headers={"Cache-Control": "private, max-age=60"})

    upstream, app = cached(sync_cache, slow(private, 0.15))
    users = [f"user{i}" for i in range(20)]
    started = time.monotonic()
    responses = concurrently(app, [("/me", {"X-User": u}) for u in users])
    elapsed = time.monotonic() - started
    assert upstream.calls == 20
    assert [r.content for r in responses] == [f"secret of {u}".encode() for u in users]
    assert elapsed < 1.5, f"waiters were served one after another: {elapsed:.2f}s"


# --- 10. bounded bodies -------------------------------------------------------------------


def streamed(chunks: int, size: int) -> Respond:
    def respond(request: flask.Request, n: int) -> flask.Response:
        def body() -> Iterator[bytes]:
            for i in range(chunks):
                yield bytes([65 + (n + i) % 26]) * size
        return flask.Response(body(), headers={"Cache-Control": "max-age=60"})
    return respond


def expected_stream(n: int, chunks: int, size: int) -> bytes:
    return b"".join(bytes([65 + (n + i) % 26]) * size for i in range(chunks))


def test_a_large_streamed_response_passes_through_and_is_not_stored(
        sync_cache: SyncCache) -> None:
    upstream, app = cached(sync_cache, streamed(5, 400), max_body_size=1000)
    with client(app) as c:
        first = c.get("/big")
        second = c.get("/big")
    assert upstream.calls == 2
    assert first.content == expected_stream(1, 5, 400)
    assert second.content == expected_stream(2, 5, 400)
    assert stored_values(sync_cache) == []


@pytest.mark.parametrize(("chunks", "size"), [(5, 10), (4, 250)])
def test_a_small_streamed_response_is_stored(sync_cache: SyncCache, chunks: int,
                                             size: int) -> None:
    upstream, app = cached(sync_cache, streamed(chunks, size), max_body_size=1000)
    with client(app) as c:
        first = c.get("/small")
        second = c.get("/small")
    assert upstream.calls == 1
    assert first.content == second.content == expected_stream(1, chunks, size)
    assert is_hit(second)


# --- PEP 3333: write(), close(), wsgiref.validate -----------------------------------------


class Closing:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


def test_a_body_sent_with_write_is_never_stored_truncated(sync_cache: SyncCache) -> None:
    """Legacy write(): bytes the middleware never sees. Passed through, not stored (a
    stored copy would lack them). httpx drops write() data, so the server is by hand."""
    calls: list[int] = []

    def legacy(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(1)
        write = start_response("200 OK", [("Cache-Control", "max-age=60")])
        write(b"written ")
        return [f"returned #{len(calls)}".encode()]

    app = WSGIResponseCacheMiddleware(legacy, cache=sync_cache)

    def serve() -> bytes:
        sent: list[bytes] = []
        env: Environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/w", "HTTP_HOST": "example.com"}
        setup_testing_defaults(env)

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], object]:
            return sent.append

        result = app(env, start_response)
        try:
            sent.extend(result)
        finally:
            result.close()  # type: ignore[attr-defined]
        return b"".join(sent)

    assert [serve(), serve()] == [b"written returned #1", b"written returned #2"]
    assert len(calls) == 2


@pytest.mark.parametrize("headers", [{}, {"Authorization": "x"}])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_apps_iterable_is_closed(sync_cache: SyncCache, method: str,
                                     headers: dict[str, str]) -> None:
    made: list[Closing] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Cache-Control", "max-age=60")])
        made.append(Closing([b"a", b"b"]))
        return made[-1]

    with client(WSGIResponseCacheMiddleware(app, cache=sync_cache)) as c:
        response = c.request(method, "/c", headers=headers)
    assert response.content == b"ab"
    assert len(made) == 1
    assert made[0].closed


def test_pep_3333_conformance() -> None:
    """wsgiref.validate on both sides of the middleware: miss, hit, HEAD, 304, bypass."""
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Cache-Control", "max-age=60")])
        return [b"hello"]

    wrapped = validator(WSGIResponseCacheMiddleware(validator(app), cache=MemoryCache()))

    def call(method: str = "GET", **extra: str) -> tuple[str, bytes]:
        env: Environ = {"REQUEST_METHOD": method, "PATH_INFO": "/v", "QUERY_STRING": "",
                        "SCRIPT_NAME": "", "wsgi.input": io.BytesIO(b""),
                        "wsgi.errors": sys.stderr, "HTTP_HOST": "example.com", **extra}
        setup_testing_defaults(env)
        seen: list[str] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], object]:
            seen.append(status)
            return lambda data: None

        result = wrapped(env, start_response)
        try:
            body = b"".join(result)
        finally:
            result.close()  # type: ignore[attr-defined]
        return seen[0], body

    assert call() == ("200 OK", b"hello")
    assert call() == ("200 OK", b"hello")
    assert call("HEAD") == ("200 OK", b"")
    assert call(HTTP_IF_NONE_MATCH="*") == ("304 Not Modified", b"")
    assert call(HTTP_AUTHORIZATION="x") == ("200 OK", b"hello")


# --- the store failing or damaged --------------------------------------------------------


@pytest.mark.parametrize("garbage", [b"not json", b"\x80\x04\x95pickle", b"[1, 2]",
                                     b'{"v": 1, "status": 200}', b'{"vary": 5}',
                                     b'{"v":1,"status":299,"headers":[],"body":"","stored_at":'
                                     b'0,"ttl":60,"etag":""}'])
@pytest.mark.parametrize("which", ["entry", "record"])
def test_a_damaged_entry_is_a_miss(sync_cache: SyncCache, garbage: bytes, which: str) -> None:
    upstream, app = cached(sync_cache, with_vary)
    with client(app) as c:
        first = c.get("/x", headers={"X-Variant": "a"})
        assert overwrite(sync_cache, which, garbage) == 1
        damaged = c.get("/x", headers={"X-Variant": "a"})
        again = c.get("/x", headers={"X-Variant": "a"})
    assert first.content == b"/x? a #1"
    assert damaged.status_code == 200
    assert damaged.content == b"/x? a #2"
    assert again.content == b"/x? a #2"
    assert upstream.calls == 2


def test_redis_outage_keeps_answering(private_redis: PrivateRedis,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ratelimit_mw.breaker")
    cache = RedisCache(private_redis.url)
    upstream, app = cached(cache)
    try:
        with client(app) as c:
            assert [c.get("/x").content for _ in range(2)] == [b"GET /x? #1"] * 2
            private_redis.kill()
            timings = []
            for _ in range(6):
                started = time.monotonic()
                response = c.get("/x")
                timings.append(time.monotonic() - started)
                assert response.status_code == 200
                assert response.content == f"GET /x? #{upstream.calls}".encode()
            assert upstream.calls == 7
            assert max(timings) < 1.0, timings
            assert status_of(response) == {"fwd": "miss", "detail": "cache-down"}
            assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
            private_redis.start()
            time.sleep(0.6)
            bodies = [c.get("/y").content for _ in range(3)]
    finally:
        cache.close()
    assert bodies == [b"GET /y? #8"] * 3
    assert upstream.calls == 8
    assert len([r for r in caplog.records if "answering again" in r.getMessage()]) == 1


def test_a_paused_redis_costs_one_timeout(private_redis: PrivateRedis) -> None:
    cache = RedisCache(private_redis.url)
    upstream, app = cached(cache)
    try:
        with client(app) as c:
            c.get("/x")
            private_redis.pause()
            started = time.monotonic()
            bodies = [c.get("/x").content for _ in range(5)]
            elapsed = time.monotonic() - started
            private_redis.resume()
    finally:
        cache.close()
    assert bodies == [f"GET /x? #{n}".encode() for n in range(2, 7)]
    assert upstream.calls == 6
    assert elapsed < 2.5, elapsed
