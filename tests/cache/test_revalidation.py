"""Revalidation, 304s, the client's own preconditions, Age, Date and Expires (RFC 9111
§4.2, §4.3), through both middlewares (a real Starlette app, a real Flask app), on the
memory store and a real Redis."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import httpx
import pytest

from tests.cache.harness import (
    LAST_MODIFIED,
    V1,
    AnyCache,
    Interface,
    Reply,
    Seen,
    is_hit,
    status_of,
    validated,
)


@pytest.mark.parametrize("cc", ["max-age=0", "max-age=0, must-revalidate", "no-cache",
                                "max-age=60, no-cache", "s-maxage=0"])
async def test_a_stale_entry_with_an_etag_is_revalidated(interface: Interface,
                                                        cache: AnyCache, cc: str) -> None:
    """Each use of an entry that is stale (or no-cache) asks the app with If-None-Match;
    its 304 refreshes the stored headers and the stored body is served."""
    respond, conditions = validated(cc)
    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        first = await c.get("/r")
        second = await c.get("/r")
        third = await c.get("/r")
    assert upstream.calls == 3
    assert conditions == [{}, {"if-none-match": V1}, {"if-none-match": V1}]
    assert [r.status_code for r in (first, second, third)] == [200] * 3
    assert first.content == second.content == third.content == b"body #1"
    assert [r.headers["x-checked"] for r in (second, third)] == ["2", "3"]  # refreshed
    assert status_of(second) == {"fwd": "stale", "fwd-status": 304, "stored": True, "ttl": 0}
    assert second.headers["etag"] == V1


async def test_last_modified_is_sent_as_if_modified_since(interface: Interface,
                                                          cache: AnyCache) -> None:
    respond, conditions = validated("max-age=0", etag=None, modified=LAST_MODIFIED)
    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        first = await c.get("/r")
        second = await c.get("/r")
    assert conditions == [{}, {"if-modified-since": LAST_MODIFIED}]
    assert second.content == first.content == b"body #1"
    assert status_of(second)["fwd-status"] == 304
    assert upstream.calls == 2


async def test_a_full_answer_to_a_revalidation_replaces_the_entry(interface: Interface,
                                                                  cache: AnyCache) -> None:
    respond, conditions = validated("max-age=0", changed_at=2)
    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        first = await c.get("/r")
        changed = await c.get("/r")
        third = await c.get("/r")
    assert (first.content, changed.content, third.content) == (b"body #1", b"body #2",
                                                               b"body #2")
    assert status_of(changed) == {"fwd": "stale", "fwd-status": 200}
    assert conditions == [{}, {"if-none-match": V1}, {"if-none-match": '"v2"'}]
    assert upstream.calls == 3


async def test_a_fresh_entry_is_not_revalidated(interface: Interface, cache: AnyCache) -> None:
    respond, conditions = validated("max-age=60, must-revalidate")
    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        responses = [await c.get("/r") for _ in range(3)]
    assert upstream.calls == 1
    assert all(is_hit(r) for r in responses[1:])
    assert conditions == [{}]


async def test_without_a_validator_a_stale_entry_is_fetched_in_full(interface: Interface,
                                                                   cache: AnyCache) -> None:
    """Our own ETag (a digest of the body) is never sent to the app: it cannot know it."""
    respond, conditions = validated("max-age=1", etag=None)
    _upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        await c.get("/r")
        await asyncio.sleep(1.05)
        again = await c.get("/r")
    assert conditions == [{}, {}]
    assert again.content == b"body #2"


@pytest.mark.parametrize("precondition", [{"If-None-Match": V1},
                                          {"If-None-Match": f'"x", W/{V1}'},
                                          {"If-Modified-Since": LAST_MODIFIED}])
async def test_a_clients_precondition_on_a_fresh_entry_gets_304_from_the_cache(
        interface: Interface, cache: AnyCache, precondition: dict[str, str]) -> None:
    respond, _ = validated("max-age=60", modified=LAST_MODIFIED)
    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        await c.get("/r")
        answer = await c.get("/r", headers=precondition)
        modified = await c.get("/r", headers={"If-Modified-Since":
                                              "Sat, 05 Nov 1994 08:49:37 GMT"})
    assert upstream.calls == 1
    assert (answer.status_code, answer.content) == (304, b"")
    assert answer.headers["etag"] == V1
    assert is_hit(answer)
    assert (modified.status_code, modified.content) == (200, b"body #1")


async def test_a_clients_precondition_during_a_revalidation(interface: Interface,
                                                            cache: AnyCache) -> None:
    """The cache asks the app with its own validators and answers the client's from the
    result: a matching client gets a 304, another the stored body."""
    respond, conditions = validated("no-cache")
    _upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        await c.get("/r")
        matching = await c.get("/r", headers={"If-None-Match": V1})
        other = await c.get("/r", headers={"If-None-Match": '"old"'})
    assert conditions == [{}, {"if-none-match": V1}, {"if-none-match": V1}]
    assert (matching.status_code, matching.content) == (304, b"")
    assert (other.status_code, other.content) == (200, b"body #1")


async def test_age_counts_the_age_it_arrived_with_and_date_is_kept(
        interface: Interface, cache: AnyCache) -> None:
    date = formatdate(usegmt=True)

    def respond(seen: Seen, n: int) -> Reply:
        return Reply(f"#{n}", headers={"Cache-Control": "max-age=60", "Age": "30",
                                       "Date": date})

    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        await c.get("/r")
        hit = await c.get("/r")
    assert upstream.calls == 1
    assert 30 <= int(hit.headers["age"]) <= 32
    assert status_of(hit)["ttl"] <= 30
    assert hit.headers.get_list("date") == [date]


async def test_a_response_without_date_is_served_with_the_date_it_was_stored(
        interface: Interface, cache: AnyCache) -> None:
    _upstream, app = interface.cached(cache)
    async with interface.client(app) as c:
        first = await c.get("/r")
        await asyncio.sleep(1.05)
        hit = await c.get("/r")
    assert "date" not in first.headers  # the test clients add none
    stored = httpx.Headers(hit.headers)["date"]
    assert is_hit(hit)
    assert stored.endswith(" GMT")
    assert hit.headers["age"] == "1"


@pytest.mark.parametrize("expires", ["Thu, 01 Jan 99 00:00:00 GMT",
                                     "Thu 01 Jan 2099 00:00:00 GMT",
                                     "Thu, 01-Jan-2099 00:00:00 GMT",
                                     "Thu, 01 Jan 2099 00:00:00 AEST"])
async def test_an_invalid_expires_is_never_served_from_the_cache(
        interface: Interface, cache: AnyCache, expires: str) -> None:
    upstream, app = interface.cached(cache, lambda seen, n: Reply(
        f"#{n}", headers={"Expires": expires}), default_ttl=60)
    async with interface.client(app) as c:
        bodies = [(await c.get("/r")).content for _ in range(2)]
    assert bodies == [b"#1", b"#2"]
    assert upstream.calls == 2


async def test_keep_stale_zero_turns_revalidation_off(interface: Interface,
                                                      cache: AnyCache) -> None:
    respond, conditions = validated("no-cache")
    _upstream, app = interface.cached(cache, respond, keep_stale=0)
    async with interface.client(app) as c:
        bodies = [(await c.get("/r")).content for _ in range(2)]
    assert bodies == [b"body #1", b"body #2"]
    assert conditions == [{}, {}]


# --- HEAD (RFC 9111 §4.3.5) -------------------------------------------------------------


@pytest.mark.parametrize(("head_etag", "freshened"), [(V1, True), ('"v2"', False),
                                                      (f"W/{V1}", False)])
async def test_a_head_answer_freshens_the_stored_get(interface: Interface, cache: AnyCache,
                                                     head_etag: str, freshened: bool) -> None:
    """A HEAD that reaches the app (the GET entry is stale) updates the stored GET's
    headers when its strong ETag is the entry's; the GET is then served without the app."""
    def respond(seen: Seen, n: int) -> Reply:
        if seen.method == "HEAD":
            return Reply(b"", headers={"Cache-Control": "max-age=60", "ETag": head_etag,
                                       "X-Checked": str(n)})
        return Reply(f"body #{n}", headers={"Cache-Control": "max-age=0", "ETag": V1,
                                            "X-Checked": str(n)})

    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        await c.get("/r")
        head = await c.head("/r")
        get = await c.get("/r")
    assert head.headers["x-checked"] == "2"
    if freshened:
        assert is_hit(get)
        assert (get.content, get.headers["x-checked"]) == (b"body #1", "2")
        assert upstream.calls == 2
    else:
        assert not is_hit(get)
        assert upstream.calls == 3


async def test_a_head_is_answered_from_a_fresh_get(interface: Interface,
                                                   cache: AnyCache) -> None:
    respond, _ = validated("max-age=60")
    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        get = await c.get("/r")
        head = await c.head("/r")
    assert upstream.calls == 1
    assert is_hit(head)
    assert head.content == b""
    assert head.headers["etag"] == get.headers["etag"]
