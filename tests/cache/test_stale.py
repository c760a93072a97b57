"""Stale content (RFC 5861) through both middlewares (a real Starlette app, a real Flask
app), on the memory store and a real Redis: stale-while-revalidate serves a stale entry
at once and revalidates it after the answer; stale-if-error serves it when the app
answers 5xx or raises. Single flight of background revalidations is in
test_asgi_cache.py and test_wsgi_cache.py; stale-if-error under uvicorn in
test_servers.py."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.cache.harness import V1, AnyCache, Interface, Reply, Respond, Seen, is_hit, status_of


def then_failing(cc: str, failure: str, *, etag: str | None = V1) -> Respond:
    """Answers ``ok #1`` with *cc* (and *etag*), then fails every call: *failure* is a
    status (``"500"``) or ``"raise"``."""
    def respond(seen: Seen, n: int) -> Reply:
        if n == 1:
            return Reply("ok #1", headers={"Cache-Control": cc, **({"ETag": etag} if etag
                                                                   else {})})
        if failure == "raise":
            raise RuntimeError("the app is down")
        return Reply(f"down #{n}", status=int(failure))

    return respond


def changing(cc: str, *, etag: bool) -> Respond:
    """Answers ``#<call>`` with *cc*, and an ETag per call if *etag*."""
    return lambda seen, n: Reply(f"#{n}", headers={"Cache-Control": cc,
                                                   **({"ETag": f'"{n}"'} if etag else {})})


# --- stale-while-revalidate ------------------------------------------------------------


async def test_stale_while_revalidate_serves_stale_then_revalidates(
        interface: Interface, cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, changing(
        "max-age=1, stale-while-revalidate=30", etag=False))
    async with interface.client(app) as c:
        first = await c.get("/r")
        await asyncio.sleep(1.1)
        stale = await c.get("/r")
        after = await c.get("/r")
    assert (first.content, stale.content, after.content) == (b"#1", b"#1", b"#2")
    assert upstream.calls == 2  # the background fetch, after the stale answer
    assert status_of(stale)["detail"] == "stale-while-revalidate"
    assert status_of(stale)["ttl"] <= 0
    assert is_hit(stale)
    assert is_hit(after)


async def test_stale_while_revalidate_with_a_validator_asks_with_it(
        interface: Interface, cache: AnyCache) -> None:
    seen_conditions: list[str | None] = []

    def respond(seen: Seen, n: int) -> Reply:
        seen_conditions.append(seen.headers.get("if-none-match"))
        headers = {"Cache-Control": "max-age=0, stale-while-revalidate=30", "ETag": V1,
                   "X-Checked": str(n)}
        if seen.headers.get("if-none-match") == V1:
            return Reply(b"", status=304, headers=headers)
        return Reply(f"#{n}", headers=headers)

    upstream, app = interface.cached(cache, respond)
    async with interface.client(app) as c:
        first = await c.get("/r")
        stale = await c.get("/r")
        refreshed = await c.get("/r")
    assert seen_conditions[:2] == [None, V1]
    assert first.content == stale.content == refreshed.content == b"#1"
    assert stale.headers["x-checked"] == "1"  # served before the revalidation
    assert refreshed.headers["x-checked"] == "2"  # refreshed by it, and stale again
    assert upstream.calls == 3  # each stale answer revalidated once, after it was sent


@pytest.mark.parametrize("cc", ["max-age=0, stale-while-revalidate=30, must-revalidate",
                                "max-age=0, stale-while-revalidate=30, no-cache",
                                "s-maxage=0, stale-while-revalidate=30"])
async def test_stale_while_revalidate_never_overrides_revalidation(
        interface: Interface, cache: AnyCache, cc: str) -> None:
    """must-revalidate, no-cache and s-maxage forbid serving stale: revalidated first."""
    upstream, app = interface.cached(cache, changing(cc, etag=True))
    async with interface.client(app) as c:
        await c.get("/r")
        second = await c.get("/r")
    assert second.content == b"#2"
    assert status_of(second)["fwd"] == "stale"
    assert upstream.calls == 2


# --- stale-if-error --------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["500", "502", "503", "504", "raise"])
async def test_stale_if_error_serves_the_stale_entry_when_the_app_fails(
        interface: Interface, cache: AnyCache, failure: str,
        caplog: pytest.LogCaptureFixture) -> None:
    upstream, app = interface.cached(cache, then_failing("max-age=0, stale-if-error=60",
                                                         failure))
    with caplog.at_level(logging.ERROR, "ratelimit_mw.cache"):
        async with interface.client(app) as c:
            first = await c.get("/r")
            answers = [await c.get("/r") for _ in range(3)]
    assert upstream.calls == 4  # every request asks the app: it may be back
    assert [(r.status_code, r.content) for r in answers] == [(200, b"ok #1")] * 3
    assert first.content == b"ok #1"
    status = status_of(answers[0])
    assert status["fwd"] == "stale"
    assert status["detail"] == "stale-if-error"
    if failure != "raise":
        assert status["fwd-status"] == int(failure)


async def test_stale_if_error_without_a_validator(interface: Interface,
                                                  cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, then_failing("max-age=1, stale-if-error=60",
                                                         "500", etag=None))
    async with interface.client(app) as c:
        await c.get("/r")
        await asyncio.sleep(1.1)
        answer = await c.get("/r")
    assert (answer.status_code, answer.content) == (200, b"ok #1")
    assert upstream.calls == 2


@pytest.mark.parametrize("cc", ["max-age=0, stale-if-error=1",          # window passed
                                "max-age=0, stale-if-error=60, must-revalidate",
                                "max-age=0, stale-if-error=60, no-cache",
                                "max-age=0"])                            # no window
async def test_the_error_goes_through_outside_stale_if_error(
        interface: Interface, cache: AnyCache, cc: str) -> None:
    upstream, app = interface.cached(cache, then_failing(cc, "503"))
    async with interface.client(app) as c:
        await c.get("/r")
        if "stale-if-error=1" in cc:
            await asyncio.sleep(1.1)
        answer = await c.get("/r")
    assert (answer.status_code, answer.content) == (503, b"down #2")
    assert upstream.calls == 2


async def test_a_4xx_is_not_an_error_for_stale_if_error(interface: Interface,
                                                        cache: AnyCache) -> None:
    upstream, app = interface.cached(cache, then_failing("max-age=0, stale-if-error=60",
                                                         "404"))
    async with interface.client(app) as c:
        await c.get("/r")
        answer = await c.get("/r")
    assert (answer.status_code, answer.content) == (404, b"down #2")
    assert upstream.calls == 2
