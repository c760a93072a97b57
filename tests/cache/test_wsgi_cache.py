"""WSGIResponseCacheMiddleware where WSGI differs from ASGI: single flight across threads,
and PEP 3333 (write(), close(), wsgiref.validate), on the memory store and a real Redis.
Every other rule runs through both middlewares in test_both_interfaces.py."""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import httpx
import pytest

from ratelimit_mw._types import Environ, StartResponse
from ratelimit_mw.cache import MemoryCache, RedisCache, WSGIResponseCacheMiddleware
from tests.cache.harness import (
    V1,
    WSGI,
    Reply,
    Seen,
    numbered,
    private,
    status_of,
    validated,
    with_vary,
)

SyncCache = RedisCache | MemoryCache


def client(app: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver")


# --- 9. single flight, threaded ---------------------------------------------------------


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
    upstream, app = WSGI.cached(sync_cache, numbered, delay=0.2)
    responses = concurrently(app, [("/hot", {})] * 20)
    assert upstream.calls == 1
    assert {r.content for r in responses} == {b"GET /hot? #1"}
    assert sum(status_of(r).get("collapsed") is True for r in responses) == 19


def test_concurrent_variants_are_never_shared(sync_cache: SyncCache) -> None:
    upstream, app = WSGI.cached(sync_cache, with_vary, delay=0.2)
    variants = ["a", "b"] * 10
    responses = concurrently(app, [("/v", {"X-Variant": v}) for v in variants])
    assert upstream.calls == 2
    for variant, response in zip(variants, responses, strict=True):
        assert response.content.startswith(f"/v? {variant} #".encode())


def test_a_head_miss_does_not_hold_the_lock(sync_cache: SyncCache) -> None:
    upstream, app = WSGI.cached(sync_cache, numbered, delay=0.2)
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
    upstream, app = WSGI.cached(sync_cache, private, delay=0.15)
    users = [f"user{i}" for i in range(20)]
    started = time.monotonic()
    responses = concurrently(app, [("/me", {"X-User": u}) for u in users])
    elapsed = time.monotonic() - started
    assert upstream.calls == 20
    assert [r.content for r in responses] == [f"secret of {u}".encode() for u in users]
    assert elapsed < 1.5, f"waiters were served one after another: {elapsed:.2f}s"


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


@pytest.mark.parametrize("chunks", [[b"done"], [b"do", b"ne"], []])
def test_an_unsafe_request_invalidates_before_its_last_chunk_goes_out(
        sync_cache: SyncCache, chunks: list[bytes]) -> None:
    """Read your own writes: the server gets the last chunk of a POST's answer (the
    headers too, when it is the only one) only once the URI's entries are gone."""
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Cache-Control", "max-age=60")])
        return iter(list(chunks)) if environ["REQUEST_METHOD"] == "POST" else [b"v1"]

    middleware = WSGIResponseCacheMiddleware(app, cache=sync_cache)
    with client(middleware) as c:
        c.get("/r")
        assert status_of(c.get("/r")).get("hit") is True
    env: Environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/r", "HTTP_HOST": "testserver"}
    setup_testing_defaults(env)
    result = middleware(env, lambda status, headers, exc_info=None: lambda data: None)
    stored_when_released = []
    try:
        for chunk in result:
            with client(middleware) as c:
                stored_when_released.append((chunk, status_of(c.get("/r")).get("hit")))
    finally:
        result.close()  # type: ignore[attr-defined]
    assert [chunk for chunk, _ in stored_when_released] == chunks
    if chunks:
        assert stored_when_released[-1][1] is None  # a miss: dropped before the last chunk


def test_twenty_threads_revalidating_together_make_one_call(sync_cache: SyncCache) -> None:
    respond, conditions = validated("no-cache")
    upstream, app = WSGI.cached(sync_cache, respond, delay=0.2)
    with client(app) as c:
        c.get("/hot")
    responses = concurrently(app, [("/hot", {})] * 20)
    assert upstream.calls == 2
    assert conditions == [{}, {"if-none-match": V1}]
    assert {r.content for r in responses} == {b"body #1"}
    assert sum(status_of(r).get("collapsed") is True for r in responses) == 19


def test_a_revalidation_by_a_generator_app(sync_cache: SyncCache) -> None:
    """An app that calls start_response only when iterated: its 304 is still ours."""
    calls: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        calls.append(environ.get("HTTP_IF_NONE_MATCH", ""))
        if environ.get("HTTP_IF_NONE_MATCH") == '"g"':
            start_response("304 Not Modified", [("ETag", '"g"'), ("Cache-Control", "no-cache")])
            return
        start_response("200 OK", [("ETag", '"g"'), ("Cache-Control", "no-cache")])
        yield b"generated"

    with client(WSGIResponseCacheMiddleware(app, cache=sync_cache)) as c:
        bodies = [c.get("/g") for _ in range(2)]
    assert calls == ["", '"g"']
    assert [(r.status_code, r.content) for r in bodies] == [(200, b"generated")] * 2
    assert status_of(bodies[1])["fwd-status"] == 304


def test_twenty_threads_on_a_stale_while_revalidate_entry_make_one_call(
        sync_cache: SyncCache) -> None:
    def respond(seen: Seen, n: int) -> Reply:
        return Reply(f"#{n}", headers={"Cache-Control": "max-age=1, stale-while-revalidate=60"})

    upstream, app = WSGI.cached(sync_cache, respond, delay=0.2)
    with client(app) as c:
        c.get("/hot")
        time.sleep(1.1)
        responses = concurrently(app, [("/hot", {})] * 20)
        after = c.get("/hot")
    assert upstream.calls == 2
    assert {r.content for r in responses} == {b"#1"}
    assert {status_of(r).get("detail") for r in responses} == {"stale-while-revalidate"}
    assert after.content == b"#2"


def test_a_percent_encoded_location_is_dropped_as_pep_3333_keys_it(sync_cache: SyncCache,
                                                                   ) -> None:
    """PEP 3333 servers put the path in PATH_INFO decoded, as latin-1 (httpx's
    WSGITransport decodes UTF-8, so the environ is built by hand here)."""
    calls: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(environ["REQUEST_METHOD"])
        if environ["REQUEST_METHOD"] == "POST":
            start_response("201 Created", [("Location", "/caf%C3%A9")])
            return [b""]
        start_response("200 OK", [("Cache-Control", "max-age=60")])
        return [f"#{len(calls)}".encode()]

    middleware = WSGIResponseCacheMiddleware(app, cache=sync_cache)

    def call(method: str, path: str) -> bytes:
        env: Environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "HTTP_HOST": "example.com"}
        setup_testing_defaults(env)
        result = middleware(env, lambda status, headers, exc_info=None: lambda data: None)
        try:
            return b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()

    cafe = "caf\u00e9".encode().decode("latin-1")
    assert call("GET", "/" + cafe) == call("GET", "/" + cafe) == b"#1"
    call("POST", "/items/1")
    assert call("GET", "/" + cafe) == b"#3"
