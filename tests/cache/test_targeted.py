"""RFC 9213 targeted cache-control fields (``targeted_field=``, off by default) through
both middlewares on the memory store and a real Redis, and the parser of their
Structured Fields syntax."""

from __future__ import annotations

import pytest

from ratelimit_mw.cache._http import sf_directives
from ratelimit_mw.errors import ConfigurationError
from tests.cache.harness import WSGI, AnyCache, Interface, Reply, Respond, is_hit


def answering(headers: dict[str, str]) -> Respond:
    return lambda seen, n: Reply(f"#{n}", headers=headers)


@pytest.mark.parametrize(("headers", "stored"), [
    ({"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"}, True),
    ({"Cache-Control": "max-age=60", "CDN-Cache-Control": "no-store"}, False),
    ({"Cache-Control": "max-age=60", "CDN-Cache-Control": "private"}, False),
    ({"Cache-Control": "no-store", "CDN-Cache-Control": "none"}, False),  # valid: no freshness
    ({"Expires": "Thu, 01 Jan 1970 00:00:00 GMT", "CDN-Cache-Control": "max-age=60"}, True),
    ({"Cache-Control": "max-age=60", "CDN-Cache-Control": "max-age=60,"}, True),  # invalid
    ({"Cache-Control": "no-store", "CDN-Cache-Control": ""}, False),           # empty
    ({"Cache-Control": "no-store", "CDN-Cache-Control": "Max-Age=60"}, False),  # invalid
])
async def test_a_valid_targeted_field_replaces_cache_control_and_expires(
        interface: Interface, cache: AnyCache, headers: dict[str, str], stored: bool) -> None:
    upstream, app = interface.cached(cache, answering(headers),
                                     targeted_field="CDN-Cache-Control")
    async with interface.client(app) as c:
        first = await c.get("/r")
        second = await c.get("/r")
    assert is_hit(second) is stored
    assert upstream.calls == (1 if stored else 2)
    assert first.headers.get("cdn-cache-control") == headers.get("CDN-Cache-Control")


async def test_off_by_default_the_targeted_field_changes_nothing(interface: Interface,
                                                                 cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, answering(
        {"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"}))
    async with interface.client(app) as c:
        await c.get("/r")
        second = await c.get("/r")
    assert not is_hit(second)
    assert upstream.calls == 2


async def test_a_targeted_must_revalidate_is_revalidated(interface: Interface,
                                                         cache: AnyCache) -> None:
    """The targeted field's directives rule the stored entry too: a stale entry is never
    served stale when it says must-revalidate, whatever Cache-Control says."""
    def respond(seen: object, n: int) -> Reply:
        if n > 1:
            return Reply("down", status=503)
        return Reply("ok", headers={
            "ETag": '"e"', "Cache-Control": "max-age=0, stale-if-error=60",
            "Ours-Cache-Control": "max-age=0, stale-if-error=60, must-revalidate"})

    upstream, app = interface.cached(cache, respond, targeted_field="Ours-Cache-Control")
    async with interface.client(app) as c:
        await c.get("/r")
        second = await c.get("/r")
    assert (second.status_code, second.content) == (503, b"down")
    assert upstream.calls == 2


@pytest.mark.parametrize("name", ["Cache-Control", "CDN Cache-Control", "", 5])
def test_a_bad_targeted_field_fails_at_construction(name: object) -> None:
    with pytest.raises(ConfigurationError, match="targeted_field"):
        WSGI.middleware(WSGI.upstream().app, targeted_field=name)


@pytest.mark.parametrize(("value", "parsed"), [
    ("max-age=600", {"max-age": "600"}),
    ("max-age=600, must-revalidate", {"max-age": "600", "must-revalidate": None}),
    ('no-cache="set-cookie, x"', {"no-cache": "set-cookie, x"}),
    ("no-store=?0, max-age=5", {"max-age": "5"}),       # false: the directive is off
    ("private=?1", {"private": None}),
    ("max-age=60;foo=1, public", {"max-age": "60", "public": None}),  # parameters ignored
    ("max-age=1.5", {"max-age": "1.5"}),                 # a decimal: max-age then void
    ("Max-Age=60", None), ("max-age=60,", None), ("", None), ("max-age=60 x", None),
    ("max-age=(1 2)", None), ('no-cache="open', None), (",", None),
])
def test_structured_fields_dictionary(value: str, parsed: dict[str, str | None] | None,
                                      ) -> None:
    assert sf_directives(value) == parsed
