"""The rules of a shared HTTP cache (RFC 9111) as pure functions: no I/O, no middleware.

Cache-Status is read with the real RFC 9651 parser (http_sf), never by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import http_sf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratelimit_mw.cache._flow import CachePolicy, CacheRule, bypass_reason, header_dict
from ratelimit_mw.cache._http import (
    CACHEABLE_STATUSES,
    CacheRequest,
    Entry,
    cache_control,
    etag_for,
    etag_matches,
    http_date,
    initial_age,
    normalize_host,
    normalize_query,
    storable,
    vary_names,
)
from ratelimit_mw.errors import ConfigurationError
from tests.cache.harness import keep_repeats

PUBLIC = [("Cache-Control", "max-age=60")]


def req(method: str = "GET", *, host: str | None = "example.com", path: str = "/a",
        query: str = "", headers: Mapping[str, str] | None = None,
        scheme: str = "http") -> CacheRequest:
    merged = {"host": host} if host is not None else {}
    merged.update({k.lower(): v for k, v in (headers or {}).items()})
    return CacheRequest(method, scheme, host, path, query, merged)


def ttl_of(request: CacheRequest, status: int, headers: list[tuple[str, str]],
           default_ttl: int = 0, allow_authorized: bool = False) -> tuple[int, str]:
    verdict = storable(request, status, headers, default_ttl=default_ttl,
                       allow_authorized=allow_authorized)
    return verdict.ttl, verdict.reason


def cache_status(value: str) -> dict[str, Any]:
    parsed = http_sf.parse(value.encode(), tltype="list")
    assert len(parsed) == 1
    item, params = parsed[0]
    assert str(item) == "ratelimit-mw"
    return dict(params)


# --- Cache-Control -------------------------------------------------------------------


def test_cache_control_is_case_insensitive_and_unquotes() -> None:
    assert cache_control('Public, MAX-AGE=60, No-Cache="Set-Cookie, X-A"') == {
        "public": None, "max-age": "60", "no-cache": "Set-Cookie, X-A"}
    assert cache_control("PRIVATE") == {"private": None}
    assert cache_control(None) == {}
    assert cache_control("") == {}
    assert cache_control(" , ,max-age=5,") == {"max-age": "5"}


def test_cache_control_first_occurrence_wins() -> None:
    assert cache_control("max-age=5, max-age=600") == {"max-age": "5"}


@pytest.mark.parametrize("value", ["Private", "PRIVATE", "private", " private "])
def test_private_in_any_case_is_never_stored(value: str) -> None:
    assert ttl_of(req(), 200, [("Cache-Control", f"max-age=60,{value}")]) == (0, "private")


@pytest.mark.parametrize("value", ["No-Store", "NO-STORE", "no-store"])
def test_no_store_in_any_case_is_never_stored(value: str) -> None:
    assert ttl_of(req(), 200, [("cache-control", f"{value}, max-age=60")]) == (0, "no-store")


def test_request_no_store_is_not_stored() -> None:
    request = req(headers={"Cache-Control": "No-Store"})
    assert ttl_of(request, 200, PUBLIC) == (0, "no-store")


def test_response_no_cache_is_not_stored() -> None:
    # We never revalidate, so a no-cache response would be served unchecked: not stored.
    assert ttl_of(req(), 200, [("Cache-Control", "No-Cache, max-age=60")]) == (0, "no-cache")


# --- freshness -----------------------------------------------------------------------


@pytest.mark.parametrize(("header", "ttl"), [
    ("max-age=60", 60),
    ("MAX-AGE=60", 60),
    ("Max-Age=\"60\"", 60),
    ("max-age=60, s-maxage=5", 5),        # s-maxage wins for a shared cache ...
    ("s-maxage=600, max-age=5", 600),     # ... in either direction
    ("S-MAXAGE=7", 7),
    ("public", 30),                       # no freshness stated: the default
    ("max-age=abc", 30),                  # an invalid delta-seconds is void
    ("max-age=-1", 30),
])
def test_freshness(header: str, ttl: int) -> None:
    assert ttl_of(req(), 200, [("Cache-Control", header)], default_ttl=30) == (ttl, "")


@pytest.mark.parametrize(("headers", "ttl"), [
    ([("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")], 0),       # in the past
    ([("Expires", "0")], 0),                                    # invalid: already expired
    ([("Expires", "soon")], 0),
    ([("Date", "garbage"), ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")], 0),
    ([("Cache-Control", "max-age=60"), ("Expires", "0")], 60),  # max-age wins
    ([("Cache-Control", "public")], 30),                        # no Expires: the default
])
def test_expires_is_explicit_freshness(headers: list[tuple[str, str]], ttl: int) -> None:
    """The rule's ttl is a default for responses that state no freshness; Expires states
    one (RFC 9111 §4.2.1), so an Expires in the past is never stored."""
    assert ttl_of(req(), 200, headers, default_ttl=30)[0] == ttl


def test_expires_minus_date_is_the_lifetime_less_the_apparent_age() -> None:
    """Expires - Date is the freshness lifetime (RFC 9111 §4.2.1); the time since Date
    is the response's apparent age (§4.2.3), taken off it."""
    date = http_date("Wed, 21 Oct 2015 07:28:00 GMT")
    assert date is not None
    headers = [("Date", "Wed, 21 Oct 2015 07:28:00 GMT"),
               ("Expires", "Wed, 21 Oct 2015 07:30:00 GMT")]
    for received, ttl in ((date, 120), (date + 30, 90), (date + 200, 0)):
        verdict = storable(req(), 200, headers, default_ttl=0, allow_authorized=False,
                           now=received)
        assert (verdict.ttl, verdict.age) == (ttl, min(int(received - date), 200))


def test_max_age_zero_is_not_stored() -> None:
    assert ttl_of(req(), 200, [("Cache-Control", "max-age=0")], default_ttl=30) == (0, "stale")


def test_no_freshness_and_no_default_is_not_stored() -> None:
    assert ttl_of(req(), 200, [])[0] == 0


def test_age_from_upstream_is_subtracted() -> None:
    assert ttl_of(req(), 200, [("Cache-Control", "max-age=60"), ("Age", "15")]) == (45, "")
    assert ttl_of(req(), 200, [("Cache-Control", "max-age=60"), ("Age", "60")])[0] == 0


# --- methods, statuses, Set-Cookie, Vary ---------------------------------------------


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_only_get_is_stored(method: str) -> None:
    assert ttl_of(req(method), 200, PUBLIC) == (0, "method")
    assert ttl_of(req("GET"), 200, PUBLIC) == (60, "")


@pytest.mark.parametrize("status", range(100, 600))
def test_only_the_listed_final_statuses_are_stored(status: int) -> None:
    ttl, reason = ttl_of(req(), status, PUBLIC)
    expected = {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}
    assert (ttl > 0) is (status in expected), (status, reason)
    assert expected == CACHEABLE_STATUSES
    if status in (429, 500, 502, 503, 504, 302, 307, 206, 304):
        assert reason == "status"


@pytest.mark.parametrize("name", ["Set-Cookie", "set-cookie", "SET-COOKIE"])
def test_set_cookie_is_never_stored(name: str) -> None:
    headers = [("Cache-Control", "public, s-maxage=60"), (name, "sid=1")]
    assert ttl_of(req(), 200, headers) == (0, "set-cookie")


@pytest.mark.parametrize("vary", ["*", "Accept, *", "accept,*,x-a"])
def test_vary_star_is_never_stored(vary: str) -> None:
    assert ttl_of(req(), 200, [*PUBLIC, ("Vary", vary)]) == (0, "vary-star")
    assert vary_names([("Vary", vary)]) is None


def test_vary_names_sorted_lowercased_from_every_field() -> None:
    headers = [("Vary", "X-B, Accept-Encoding"), ("content-type", "x"), ("VARY", "x-a,,")]
    assert vary_names(headers) == ("accept-encoding", "x-a", "x-b")
    assert vary_names([]) == ()


# --- Authorization / Cookie ----------------------------------------------------------


@pytest.mark.parametrize("credential", [{"Authorization": "Bearer t"}, {"Cookie": "sid=1"}])
@pytest.mark.parametrize(("allow", "cc", "stored"), [
    (False, "public, max-age=60", False),   # no opt-in: never
    (False, "s-maxage=60", False),
    (True, "max-age=60", False),            # opt-in, but not marked shareable
    (True, "public, max-age=60", True),
    (True, "s-maxage=60", True),
    (True, "public, private, max-age=60", False),
])
def test_authorized_requests(credential: dict[str, str], allow: bool, cc: str,
                             stored: bool) -> None:
    ttl, reason = ttl_of(req(headers=credential), 200, [("Cache-Control", cc)],
                         allow_authorized=allow)
    assert (ttl > 0) is stored
    if not stored:
        assert reason in ("authorized", "private")


def test_bypass_reasons() -> None:
    policy = CachePolicy(rules=(CacheRule("/me", exempt=True),
                                CacheRule("/shared/{rest:path}", allow_authorized=True)))

    def reason(request: CacheRequest) -> str | None:
        return bypass_reason(policy, policy.rule_for(request.path), request)

    assert reason(req()) is None
    assert reason(req("HEAD")) is None
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert reason(req(method)) == "method"
    assert reason(req(path="/me")) == "exempt"
    assert reason(req(path="/me/")) == "exempt"  # rules match normalised paths
    for cc in ("no-cache", "No-Cache", "no-store", "NO-STORE, max-age=0"):
        assert reason(req(headers={"Cache-Control": cc})) == "request-no-cache"
    assert reason(req(headers={"Authorization": "x"})) == "authorized"
    assert reason(req(headers={"Cookie": "a=b"})) == "authorized"
    assert reason(req(path="/shared/x", headers={"Cookie": "a=b"})) is None


@pytest.mark.parametrize("options", [
    {"default_ttl": -1}, {"default_ttl": 1.5}, {"default_ttl": True},
    {"max_body_size": -1}, {"lock_wait": 0}, {"poll_interval": -1},
    {"rules": ("/a",)}, {"rules": (CacheRule("/a", ttl=-5),)},
])
def test_policy_is_checked(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        CachePolicy(**options)


# --- hosts, queries and keys ---------------------------------------------------------


@pytest.mark.parametrize(("host", "scheme", "normal"), [
    ("Example.COM", "http", "example.com"),
    ("example.com.", "http", "example.com"),
    ("example.com:80", "http", "example.com"),
    ("example.com:443", "https", "example.com"),
    ("example.com:443", "http", "example.com:443"),
    ("example.com:8080", "http", "example.com:8080"),
    ("[::1]:8000", "http", "[::1]:8000"),
    ("[::1]", "http", "[::1]"),
    ("10.0.0.1", "http", "10.0.0.1"),
])
def test_normalize_host(host: str, scheme: str, normal: str) -> None:
    assert normalize_host(host, scheme) == normal


@pytest.mark.parametrize("host", [
    None, "", "evil.com/x", "a b", "victim.com@evil.com", "x:99999", "x:8o", "-x.com",
    "ex_ample.com", "évil.com", "a..b", "[zz]", "victim.com:80@evil.com", "a\r\nb",
])
def test_invalid_hosts_have_no_key(host: str | None) -> None:
    assert normalize_host(host, "http") is None
    assert req(host=host).primary_key(None) is None


def test_allowed_hosts_restrict_the_key() -> None:
    allowed = frozenset({"example.com"})
    assert req(host="EXAMPLE.com:80").primary_key(allowed) is not None
    assert req(host="other.com").primary_key(allowed) is None


def test_normalize_query_documented_form() -> None:
    assert normalize_query("b=2&a=%41&a=1&c") == "a=A&a=1&b=2&c="
    assert normalize_query("") == ""
    assert normalize_query("q=a+b") == normalize_query("q=a%20b") == "q=a%20b"
    assert normalize_query("q=%2B") == "q=%2B" != normalize_query("q=+")
    assert normalize_query("a=1&b=2") != normalize_query("a=2&b=1")
    # A repeated name keeps the order of its values: frameworks read the first or the last.
    assert normalize_query("a=1&a=2") == "a=1&a=2" != normalize_query("a=2&a=1")
    assert normalize_query("b=1&a=2&b=0&a=1") == "a=2&a=1&b=1&b=0"


def test_the_key_holds_method_scheme_host_path_query_and_forwarding_headers() -> None:
    base = req().primary_key(None)
    assert base is not None
    assert req("HEAD").primary_key(None) == base  # HEAD is served from GET's entry
    others = [
        req(scheme="https").primary_key(None),
        req(host="other.com").primary_key(None),
        req(host="example.com:8080").primary_key(None),
        req(path="/b").primary_key(None),
        req(query="x=1").primary_key(None),
        req(headers={"X-Forwarded-Host": "evil.com"}).primary_key(None),
        req(headers={"X-Forwarded-Proto": "https"}).primary_key(None),
        req(headers={"Forwarded": "host=evil.com"}).primary_key(None),
        req(headers={"X-Original-URL": "/admin"}).primary_key(None),
    ]
    assert None not in others
    assert len({base, *others}) == len(others) + 1
    # A header that is neither keyed nor Vary'd does not split the entry.
    assert req(headers={"Accept": "text/html"}).primary_key(None) == base


def test_prefix_is_readable_up_to_the_path() -> None:
    key = req(path="/items/1", query="z=1").primary_key(None)
    assert key is not None
    assert key.startswith("http://example.com/items/1#")


def test_variant_keys_absent_is_not_empty() -> None:
    primary = "p"
    absent = req().variant_key(primary, ("x-variant",))
    empty = req(headers={"X-Variant": ""}).variant_key(primary, ("x-variant",))
    a = req(headers={"X-Variant": "a"}).variant_key(primary, ("x-variant",))
    assert len({absent, empty, a}) == 3
    # Not listed in Vary: not part of the variant.
    assert req(headers={"X-Variant": "a"}).variant_key(primary, ()) == req().variant_key(
        primary, ())


# A query pair as a client may write it: the same pair has several spellings.
_text = st.text(alphabet="ab z+&=%/é?#", min_size=0, max_size=6)


def _spell(text: str, plus: bool) -> str:
    encoded = quote(text, safe="")
    return encoded.replace("%20", "+") if plus else encoded


@given(pairs=st.lists(st.tuples(_text, _text), min_size=0, max_size=6, unique=True),
       headers=st.dictionaries(st.sampled_from(["accept", "x-variant", "accept-language",
                                                "x-other", "user-agent"]),
                               st.text(alphabet="abc ,;=", max_size=5), max_size=5),
       data=st.data())
def test_same_request_in_any_order_is_one_key(pairs: list[tuple[str, str]],
                                              headers: dict[str, str],
                                              data: st.DataObject) -> None:
    """Same request, headers and query pairs in another order (each repeated name's values
    in their order) and +/%20 spellings: one primary key, one variant key."""
    vary = ("accept", "x-variant")

    def build(order: list[tuple[str, str]], plus: bool, header_order: list[str],
              ) -> CacheRequest:
        query = "&".join(f"{_spell(k, plus)}={_spell(v, not plus)}" for k, v in order)
        raw = [("Host", "example.com")] + [(name.title(), headers[name])
                                            for name in header_order]
        parsed = header_dict(raw)
        return CacheRequest("GET", "http", parsed.get("host"), "/p", query, parsed)

    first = build(pairs, False, list(headers))
    again = build(keep_repeats(pairs, data.draw(st.permutations(pairs))), True,
                  data.draw(st.permutations(list(headers))))
    primary = first.primary_key(None)
    assert primary is not None
    assert again.primary_key(None) == primary
    assert again.variant_key(primary, vary) == first.variant_key(primary, vary)


@given(a=st.one_of(st.none(), st.text(alphabet="ab ,", max_size=4)),
       b=st.one_of(st.none(), st.text(alphabet="ab ,", max_size=4)),
       other=st.text(alphabet="xyz", max_size=3))
def test_different_vary_values_are_different_entries(a: str | None, b: str | None,
                                                     other: str) -> None:
    """Two requests differing in a Vary'd header (absent ≠ empty) get two variant keys;
    differing only in a header that is not Vary'd, one."""
    def build(value: str | None) -> CacheRequest:
        headers = {"host": "example.com", "x-other": other}
        if value is not None:
            headers["x-variant"] = value
        return CacheRequest("GET", "http", "example.com", "/p", "", headers)

    primary = build(a).primary_key(None)
    assert primary is not None
    assert build(b).primary_key(None) == primary
    same = build(a).variant_key(primary, ("x-variant",)) == build(b).variant_key(
        primary, ("x-variant",))
    assert same is (a == b)
    assert build(a).variant_key(primary, ("x-other",)) == build(b).variant_key(
        primary, ("x-other",))


# --- entries: what is kept, ETag, hits -----------------------------------------------


def test_entry_strips_hop_by_hop_and_per_request_fields() -> None:
    headers = [
        ("Content-Type", "text/plain"), ("X-App", "1"), ("X-App", "2"),
        ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
        ("Trailer", "x"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
        ("Proxy-Authenticate", "Basic"), ("Proxy-Connection", "close"),
        ("RateLimit", '"d";r=1;t=2'), ("RateLimit-Policy", '"d";q=5;w=60'),
        ("X-RateLimit-Limit", "5"), ("X-RateLimit-Remaining", "1"),
        ("X-RateLimit-Reset", "9"), ("Retry-After", "3"), ("Age", "4"),
        ("Cache-Status", "up; hit"),
    ]
    entry = Entry.build(200, headers, b"body", 60)
    assert [(n, v) for n, v in entry.headers if n not in ("etag", "date")] == [
        ("Content-Type", "text/plain"), ("X-App", "1"), ("X-App", "2")]
    assert ("etag", etag_for(b"body")) in entry.headers


def test_entry_strips_every_ratelimit_field_and_connection_options() -> None:
    """RateLimit*/X-RateLimit-* by prefix (draft-6 names, X-RateLimit-Used, ...), and the
    fields a Connection header names (RFC 9110 §7.6.1)."""
    headers = [("RateLimit-Limit", "5"), ("RateLimit-Remaining", "4"),
               ("RateLimit-Reset", "60"), ("X-RateLimit-Used", "1"),
               ("x-ratelimit-reset-after", "3"), ("Connection", "X-Hop, close"),
               ("X-Hop", "secret"), ("X-Kept", "1")]
    entry = Entry.build(200, headers, b"", 60)
    assert [n for n, _ in entry.headers] == ["X-Kept", "etag", "date"]


def test_etag_is_deterministic_and_the_apps_own_is_kept() -> None:
    assert etag_for(b"abc") == etag_for(b"abc") != etag_for(b"abd")
    assert etag_for(b"abc").startswith('"')
    assert etag_for(b"abc").endswith('"')
    assert Entry.build(200, [], b"abc", 5).etag == Entry.build(200, [], b"abc", 9).etag
    own = Entry.build(200, [("ETag", 'W/"v1"')], b"abc", 5)
    assert own.etag == 'W/"v1"'
    assert [n for n, _ in own.headers] == ["ETag", "date"]


@pytest.mark.parametrize(("header", "matches"), [
    ('"t"', True), ('W/"t"', True), ('"x", "t"', True), ('"x",W/"t" ', True), ("*", True),
    (" * ", True), ('"x"', False), ("", False), (None, False), ('"T"', False),
])
def test_if_none_match_weak_comparison(header: str | None, matches: bool) -> None:
    assert etag_matches(header, '"t"') is matches
    assert etag_matches(header, 'W/"t"') is matches


def test_entry_json_round_trip_keeps_repeated_headers_and_bytes() -> None:
    body = bytes(range(256))
    entry = Entry.build(203, [("X-A", "1"), ("X-A", "2")], body, 60, now=1000.0)
    again = Entry.from_json(entry.to_json())
    assert again == entry
    assert again is not None
    assert again.body == body


def test_a_latin1_header_value_survives_the_round_trip() -> None:
    entry = Entry.build(200, [("Content-Disposition", "attachment; filename=caf\xe9.txt")],
                        b"x", 60)
    assert Entry.from_json(entry.to_json()) == entry


@pytest.mark.parametrize("damaged", [
    None, 1, "x", [], {}, {"v": 2}, {"v": 1}, {"v": 1, "status": "x"},
    {"v": 1, "status": 200, "headers": 5, "body": "", "stored_at": 0, "ttl": 1, "etag": ""},
    {"v": 1, "status": 200, "headers": [["a"]], "body": "", "stored_at": 0, "ttl": 1,
     "etag": ""},
    {"v": 1, "status": 200, "headers": [], "body": "!!", "stored_at": 0, "ttl": 1,
     "etag": ""},
    {"v": 1, "status": 200, "headers": [], "body": "", "stored_at": "x", "ttl": 1,
     "etag": ""},
    # A status we never store (a WSGI hit could not even spell it), headers that cannot
    # go on the wire: not an entry.
    {"v": 1, "status": 299, "headers": [], "body": "", "stored_at": 0, "ttl": 1, "etag": ""},
    {"v": 1, "status": 500, "headers": [], "body": "", "stored_at": 0, "ttl": 1, "etag": ""},
    {"v": 1, "status": 200, "headers": [["x", "é€"]], "body": "", "stored_at": 0, "ttl": 1,
     "etag": ""},
    {"v": 1, "status": 200, "headers": [["x", "a\r\nSet-Cookie: s=1"]], "body": "",
     "stored_at": 0, "ttl": 1, "etag": ""},
])
def test_damaged_entries_are_misses(damaged: Any) -> None:
    assert Entry.from_json(damaged) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@given(json_values, st.sampled_from([None, "status", "headers", "body", "ttl", "etag"]))
def test_from_json_never_raises(value: Any, replace: str | None) -> None:
    good = Entry.build(200, [("X", "1")], b"ok", 60).to_json()
    if replace is not None:
        good[replace] = value
        value = good
    entry = Entry.from_json(value)
    assert entry is None or isinstance(entry, Entry)


def test_hit_carries_age_and_cache_status() -> None:
    entry = Entry.build(200, [("Content-Type", "text/plain")], b"hello", 60, now=1000.0)
    status, headers, body = entry.hit(req(), 1007.5)
    assert (status, body) == (200, b"hello")
    fields = dict(headers)
    assert fields["age"] == "7"
    assert cache_status(fields["cache-status"]) == {"hit": True, "ttl": 53}
    _, headers, _ = entry.hit(req(), 1000.0, collapsed=True)
    assert cache_status(dict(headers)["cache-status"]) == {"hit": True, "ttl": 60,
                                                          "collapsed": True}
    assert entry.fresh(1059.9)
    assert not entry.fresh(1060.0)


def test_head_hit_has_the_headers_and_no_body() -> None:
    entry = Entry.build(200, [("Content-Type", "text/plain"), ("Content-Length", "5")],
                        b"hello", 60, now=1000.0)
    get = entry.hit(req(), 1001.0)
    head = entry.hit(req("HEAD"), 1001.0)
    assert head == (200, get[1], b"")


def test_if_none_match_gives_304_without_body() -> None:
    entry = Entry.build(200, [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60"),
                              ("Content-Length", "5")], b"hello", 60, now=1000.0)
    for inm in (entry.etag, "W/" + entry.etag, f'"nope", {entry.etag}', "*"):
        status, headers, body = entry.hit(req(headers={"If-None-Match": inm}), 1002.0)
        fields = {n.lower(): v for n, v in headers}
        assert (status, body) == (304, b"")
        assert "content-length" not in fields
        assert "content-type" not in fields
        assert fields["etag"] == entry.etag
        assert fields["cache-control"] == "max-age=60"
    status, _, body = entry.hit(req(headers={"If-None-Match": '"nope"'}), 1002.0)
    assert (status, body) == (200, b"hello")


@pytest.mark.parametrize("status", [404, 410, 301, 300, 405, 501])
def test_if_none_match_never_turns_an_error_or_redirect_into_304(status: int) -> None:
    """A precondition is evaluated only where the response would be 2xx (RFC 9110
    §13.2.1): ``If-None-Match: *`` on a cached 404 is the 404, not "Not Modified"."""
    entry = Entry.build(status, [], b"gone", 60, now=1000.0)
    for inm in ("*", entry.etag):
        got, _, body = entry.hit(req(headers={"If-None-Match": inm}), 1001.0)
        assert (got, body) == (status, b"gone")


# --- dates, Age, revalidation (RFC 9110 §5.6.7, RFC 9111 §4.2.3, §4.3) ---------------

NOV_6_1994 = 784111777.0


@pytest.mark.parametrize("value", [
    "Sun, 06 Nov 1994 08:49:37 GMT",     # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",    # RFC 850, obsolete but to be accepted
    "Sun Nov  6 08:49:37 1994",          # asctime
])
def test_the_three_http_date_forms(value: str) -> None:
    assert http_date(value) == NOV_6_1994


@pytest.mark.parametrize("value", [
    "Sun, 06 Nov 94 08:49:37 GMT",       # two-digit year in an IMF-fixdate
    "Sun 06 Nov 1994 08:49:37 GMT",      # no comma
    "Sun, 06-Nov-1994 08:49:37 GMT",     # dashes
    "Sun, 06 Nov 1994 08:49:37 AEST",    # another zone
    "Sun, 06 Nov 1994 08:49:37 +0000",
    "Sun, 06 Nov 1994\r\n 08:49:37 GMT",  # folded over two lines
    "sun, 06 nov 1994 08:49:37 gmt",     # case-sensitive
    "Sat, 31 Feb 2026 00:00:00 GMT", "Sun, 06 Nov 1994 25:00:00 GMT", "0", "-1", "",
])
def test_anything_else_is_not_a_date(value: str) -> None:
    assert http_date(value) is None


@pytest.mark.parametrize("expires", [
    "Sun, 06 Nov 94 08:49:37 GMT", "Thu 01 Jan 2099 00:00:00 GMT",
    "Thu, 01-Jan-2099 00:00:00 GMT", "Thu, 01 Jan 2099 00:00:00 AEST",
    "Thu, 01 Jan 2099\n 00:00:00 GMT",
])
def test_an_invalid_expires_is_already_expired(expires: str) -> None:
    assert ttl_of(req(), 200, [("Expires", expires)], default_ttl=30) == (0, "stale")


def test_a_valid_future_expires_is_fresh() -> None:
    assert ttl_of(req(), 200, [("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")])[0] > 0


@pytest.mark.parametrize(("age", "ttl"), [
    ("15", 45), ("15, 30", 45),                  # a list: its first member
    ("1800a", 60), ("a15", 60), ("-5", 60), ("1.5", 60), ("", 60),  # invalid: ignored
])
def test_age_is_parsed_as_the_rfc_says(age: str, ttl: int) -> None:
    assert ttl_of(req(), 200, [("Cache-Control", "max-age=60"), ("Age", age)])[0] == ttl


def test_the_corrected_initial_age() -> None:
    """max(apparent age from Date, Age + response delay) (RFC 9111 §4.2.3)."""
    date = [("Date", "Sun, 06 Nov 1994 08:49:37 GMT")]
    assert initial_age(date, NOV_6_1994, NOV_6_1994 + 10) == 10
    assert initial_age([("Age", "5")], 100.0, 103.0) == 8
    assert initial_age([*date, ("Age", "30")], NOV_6_1994, NOV_6_1994 + 2) == 32
    assert initial_age([], 100.0, 100.0) == 0


def test_a_hit_counts_the_age_it_arrived_with() -> None:
    entry = Entry.build(200, [("Cache-Control", "max-age=60")], b"x", 45, now=1000.0,
                        age0=15)
    _status, headers, _ = entry.hit(req(), 1010.0)
    assert dict(headers)["age"] == "25"
    assert cache_status(dict(headers)["cache-status"])["ttl"] == 35


def test_the_date_is_kept_and_added_when_missing() -> None:
    dated = Entry.build(200, [("Date", "Sun, 06 Nov 1994 08:49:37 GMT")], b"", 5)
    assert dated.header("date") == "Sun, 06 Nov 1994 08:49:37 GMT"
    undated = Entry.build(200, [("Date", "garbage")], b"", 5, now=NOV_6_1994)
    assert [v for n, v in undated.headers if n.lower() == "date"] == [
        "Sun, 06 Nov 1994 08:49:37 GMT"]


def test_validators_are_the_apps_own() -> None:
    assert Entry.build(200, [], b"x", 5).validators() == []  # our digest: not the app's
    both = Entry.build(200, [("ETag", '"a"'), ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")],
                       b"x", 5)
    assert both.validators() == [("if-none-match", '"a"'),
                                 ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]


@pytest.mark.parametrize(("cc", "stale_ok"), [
    ("max-age=60", True), ("max-age=60, must-revalidate", False),
    ("max-age=60, proxy-revalidate", False), ("s-maxage=60", False), ("no-cache", False),
])
def test_what_may_be_served_stale(cc: str, stale_ok: bool) -> None:
    assert Entry.build(200, [("Cache-Control", cc)], b"", 5).may_serve_stale() is stale_ok


def test_a_304_refreshes_the_stored_headers() -> None:
    """RFC 9111 §4.3.4: the 304's fields replace the stored ones of that name; the body,
    and Content-Length, stay; freshness starts again."""
    entry = Entry.build(200, [("ETag", '"a"'), ("Content-Length", "4"), ("X-Old", "1"),
                              ("Cache-Control", "max-age=1"), ("X-Keep", "k")],
                        b"body", 1, now=1000.0)
    fresh = entry.refreshed([("Cache-Control", "max-age=60"), ("X-Old", "2"),
                             ("Content-Length", "0"), ("ETag", '"b"'), ("Age", "3"),
                             ("Set-Cookie", "s=1")], 60, 2000.0)
    assert fresh.body == b"body"
    assert (fresh.stored_at, fresh.ttl, fresh.etag, fresh.own_etag) == (2000.0, 60, '"b"',
                                                                       False)
    assert fresh.header("content-length") == "4"
    assert fresh.header("x-old") == "2"
    assert fresh.header("x-keep") == "k"
    assert fresh.header("cache-control") == "max-age=60"
    assert fresh.header("age") is None
    assert fresh.header("set-cookie") is None


@pytest.mark.parametrize(("headers", "not_modified"), [
    ({"If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"}, True),
    ({"If-Modified-Since": "Sun, 06 Nov 1994 08:49:36 GMT"}, False),   # modified since
    ({"If-Modified-Since": "yesterday"}, False),                        # not a date
    ({"If-None-Match": '"nope"', "If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"},
     False),                                                 # If-None-Match decides alone
    ({"If-None-Match": 'W/"a"'}, True),
])
def test_a_clients_own_preconditions(headers: dict[str, str], not_modified: bool) -> None:
    entry = Entry.build(200, [("ETag", '"a"'), ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")],
                        b"body", 60, now=1000.0)
    status, _, body = entry.hit(req(headers=headers), 1001.0)
    assert (status == 304) is not_modified
    assert body == (b"" if not_modified else b"body")


def test_an_entry_stored_before_revalidation_still_reads() -> None:
    """The value format grew "age0" and "own": values without them read as age 0 and an
    ETag the app may not know (never sent to it)."""
    old = {"v": 1, "status": 200, "headers": [["etag", '"x"']], "body": "", "stored_at": 5.0,
           "ttl": 60, "etag": '"x"'}
    entry = Entry.from_json(old)
    assert entry is not None
    assert (entry.age0, entry.own_etag, entry.validators()) == (0, True, [])


@pytest.mark.parametrize("cc", ["no-cache", "max-age=0"])
def test_stale_at_once_is_stored_only_with_a_validator(cc: str) -> None:
    """With revalidation on, an answer that is stale at once is kept for its validator
    (each use asks the app); without one it is not stored."""
    def verdict(headers: list[tuple[str, str]]) -> tuple[int, str]:
        found = storable(req(), 200, [("Cache-Control", cc), *headers], default_ttl=0,
                         allow_authorized=False, revalidate=True)
        return found.ttl, found.reason

    assert verdict([("ETag", '"a"')]) == (0, "")
    assert verdict([("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")]) == (0, "")
    assert verdict([])[1] in ("no-cache", "stale")
