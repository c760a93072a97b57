"""One scenario, either middleware: the ASGI and WSGI cache tests drive the same steps.

A test writes its upstream once, as a *respond* function from what the app saw (`Seen`)
and the call number to a `Reply`; `ASGI` turns it into a Starlette app, `WSGI` into a
Flask app. Both are reached with an ``httpx.AsyncClient``: the WSGI app through a
transport that runs httpx's ``WSGITransport`` to the end of each request, so a test body
``await``s the same calls whichever middleware it drives.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import flask
import http_sf
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from ratelimit_mw import RateLimitMiddleware, WSGIRateLimitMiddleware
from ratelimit_mw._types import Environ, Receive, Scope, Send, StartResponse
from ratelimit_mw.cache import (
    AsyncMemoryCache,
    AsyncRedisCache,
    MemoryCache,
    RedisCache,
    ResponseCacheMiddleware,
    WSGIResponseCacheMiddleware,
)

T = TypeVar("T")
AnyCache = AsyncRedisCache | AsyncMemoryCache | RedisCache | MemoryCache
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class Seen(NamedTuple):
    """What the app saw of a request, in either framework."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # case-insensitive
    #: The query as the framework reads it: for a repeated name, Starlette gives the last
    #: value and Flask the first.
    args: Mapping[str, str]


class Reply(NamedTuple):
    """What the app answers: *body* a list of chunks is streamed one chunk at a time."""

    body: str | bytes | list[bytes]
    status: int = 200
    headers: Mapping[str, str] = MappingProxyType({})


Respond = Callable[[Seen, int], Reply]


def numbered(seen: Seen, n: int) -> Reply:
    """The default answer: says which call made it, fresh for a minute."""
    return Reply(f"{seen.method} {seen.path}?{seen.query} #{n}",
                 headers={"Cache-Control": "max-age=60"})


def with_vary(seen: Seen, n: int) -> Reply:
    variant = seen.headers.get("x-variant")
    return Reply(f"{seen.path}?{seen.query} {variant} #{n}",
                 headers={"Cache-Control": "max-age=60", "Vary": "X-Variant"})


def private(seen: Seen, n: int) -> Reply:
    """A private answer for the user the request names."""
    return Reply(f"secret of {seen.headers['x-user']}",
                 headers={"Cache-Control": "private, max-age=60"})


#: The ETag and Last-Modified of `validated` apps.
V1 = '"v1"'
LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"


def validated(cc: str, *, etag: str | None = V1, modified: str | None = None,
              changed_at: int = 0) -> tuple[Respond, list[dict[str, str]]]:
    """An app whose resource carries *etag* / *modified* and answers a matching
    precondition with a 304 (with ``X-Checked: <call>``), until call *changed_at*, from
    which it has a new body and ETag ``"v2"``. Also the preconditions each call saw."""
    seen_conditions: list[dict[str, str]] = []

    def respond(seen: Seen, n: int) -> Reply:
        conditions = {k: seen.headers[k] for k in ("if-none-match", "if-modified-since")
                      if k in seen.headers}
        seen_conditions.append(conditions)
        changed = bool(changed_at) and n >= changed_at
        headers = {"Cache-Control": cc, "X-Checked": str(n)}
        current = '"v2"' if changed else etag
        if current is not None:
            headers["ETag"] = current
        if modified is not None:
            headers["Last-Modified"] = modified
        if (current is not None and conditions.get("if-none-match") == current) or (
                not changed and modified is not None
                and conditions.get("if-modified-since") == modified):
            return Reply(b"", status=304, headers=headers)
        return Reply(f"body #{n}", headers=headers)

    return respond, seen_conditions


class Upstream:
    """An app whose one endpoint (every path, every method) counts its calls, under a
    lock (threaded tests), waits *delay* seconds and answers what *respond* says."""

    def __init__(self, respond: Respond, delay: float) -> None:
        self.calls = 0
        self.respond = respond
        self.delay = delay
        self._lock = threading.Lock()
        self.app: Any = None

    def count(self) -> int:
        with self._lock:
            self.calls += 1
            return self.calls


class Interface:
    """One of the two middlewares, and what a scenario needs around it."""

    name: str

    def upstream(self, respond: Respond = numbered, delay: float = 0.0) -> Upstream:
        raise NotImplementedError

    def middleware(self, app: Any, **options: Any) -> Any:
        raise NotImplementedError

    def limiter(self, app: Any, **options: Any) -> Any:
        """The rate-limit middleware of this interface around *app*."""
        raise NotImplementedError

    def mount(self, apps: dict[str, Any]) -> Any:
        """One app serving each of *apps* under its path prefix."""
        raise NotImplementedError

    def lower_case_method(self, app: Any) -> Any:
        """*app* behind a proxy that lower-cases the method (httpx upper-cases it)."""
        raise NotImplementedError

    def transport(self, app: Any) -> httpx.AsyncBaseTransport:
        raise NotImplementedError

    def memory_cache(self, **options: Any) -> AnyCache:
        """The memory store of this interface, on a ``MemoryCache(**options)``."""
        raise NotImplementedError

    def redis_cache(self, url: str, **options: Any) -> AnyCache:
        raise NotImplementedError

    async def close(self, cache: AnyCache) -> None:
        """Close a Redis cache (memory caches hold nothing to close)."""
        if isinstance(cache, AsyncRedisCache):
            await cache.aclose()
        elif isinstance(cache, RedisCache):
            cache.close()

    def cached(self, cache: AnyCache, respond: Respond = numbered, delay: float = 0.0,
               **options: Any) -> tuple[Upstream, Any]:
        """A counting upstream, and the cache middleware in front of it."""
        upstream = self.upstream(respond, delay)
        return upstream, self.middleware(upstream.app, cache=cache, **options)

    def client(self, app: Any, base_url: str = "http://testserver") -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport(app), base_url=base_url)

    def __repr__(self) -> str:
        return self.name


class _ASGI(Interface):
    name = "asgi"

    def upstream(self, respond: Respond = numbered, delay: float = 0.0) -> Upstream:
        upstream = Upstream(respond, delay)

        async def endpoint(request: Request) -> Response:
            n = upstream.count()
            if delay:
                await asyncio.sleep(delay)
            seen = Seen(request.method, request.url.path, request.url.query, request.headers,
                        request.query_params)
            return _starlette(respond(seen, n))

        upstream.app = Starlette(routes=[Route("/{path:path}", endpoint, methods=METHODS)])
        return upstream

    def middleware(self, app: Any, **options: Any) -> Any:
        return ResponseCacheMiddleware(app, **options)

    def limiter(self, app: Any, **options: Any) -> Any:
        return RateLimitMiddleware(app, **options)

    def mount(self, apps: dict[str, Any]) -> Any:
        return Starlette(routes=[Mount(prefix, app) for prefix, app in apps.items()])

    def lower_case_method(self, app: Any) -> Any:
        async def lowered(scope: Scope, receive: Receive, send: Send) -> None:
            await app({**scope, "method": scope["method"].lower()}, receive, send)
        return lowered

    def transport(self, app: Any) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=app)

    def memory_cache(self, **options: Any) -> AnyCache:
        return AsyncMemoryCache(MemoryCache(**options))

    def redis_cache(self, url: str, **options: Any) -> AnyCache:
        return AsyncRedisCache(url, **options)


def _starlette(reply: Reply) -> Response:
    body, status, headers = reply
    if isinstance(body, list):
        async def chunks() -> AsyncIterator[bytes]:
            for chunk in body:
                yield chunk
                await asyncio.sleep(0)
        return StreamingResponse(chunks(), status_code=status, headers=dict(headers))
    return Response(body, status_code=status, headers=dict(headers), media_type="text/plain")


class _WSGI(Interface):
    name = "wsgi"

    def upstream(self, respond: Respond = numbered, delay: float = 0.0) -> Upstream:
        upstream = Upstream(respond, delay)

        def view(path: str) -> flask.Response:
            n = upstream.count()
            if delay:
                time.sleep(delay)
            request = flask.request
            seen = Seen(request.method, request.path, request.query_string.decode(),
                        request.headers, request.args)
            body, status, headers = respond(seen, n)
            return flask.Response(iter(body) if isinstance(body, list) else body,
                                  status=status, headers=dict(headers), mimetype="text/plain")

        app = flask.Flask(__name__)
        app.add_url_rule("/", "root", view, methods=METHODS, defaults={"path": ""})
        app.add_url_rule("/<path:path>", "any", view, methods=METHODS)
        upstream.app = app.wsgi_app
        return upstream

    def middleware(self, app: Any, **options: Any) -> Any:
        return WSGIResponseCacheMiddleware(app, **options)

    def limiter(self, app: Any, **options: Any) -> Any:
        return WSGIRateLimitMiddleware(app, **options)

    def mount(self, apps: dict[str, Any]) -> Any:
        return DispatcherMiddleware(self.upstream().app, apps)

    def lower_case_method(self, app: Any) -> Any:
        def lowered(environ: Environ, start_response: StartResponse) -> Any:
            environ["REQUEST_METHOD"] = environ["REQUEST_METHOD"].lower()
            return app(environ, start_response)
        return lowered

    def transport(self, app: Any) -> httpx.AsyncBaseTransport:
        return _WSGIToEnd(app)

    def memory_cache(self, **options: Any) -> AnyCache:
        return MemoryCache(**options)

    def redis_cache(self, url: str, **options: Any) -> AnyCache:
        return RedisCache(url, **options)


class _WSGIToEnd(httpx.AsyncBaseTransport):
    """httpx's ``WSGITransport`` behind the async client: each request runs (blocking)
    until the body is read and the app's iterable closed, as the sync client does."""

    def __init__(self, app: Any) -> None:
        self._wsgi = httpx.WSGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        sync = httpx.Request(request.method, request.url, headers=request.headers,
                             stream=httpx.ByteStream(body))
        response = self._wsgi.handle_request(sync)
        try:
            content = response.read()
        finally:
            response.close()
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=httpx.ByteStream(content))


ASGI = _ASGI()
WSGI = _WSGI()
INTERFACES = [ASGI, WSGI]


async def settle(value: T | Awaitable[T]) -> T:
    """*value*, awaited if it is awaitable: a call on either middleware or store."""
    if inspect.isawaitable(value):
        return await value
    return value


def keep_repeats(pairs: Sequence[tuple[str, str]], shuffled: Sequence[tuple[str, str]],
                 ) -> list[tuple[str, str]]:
    """*shuffled* (a permutation of *pairs*) with the values of each repeated name put back
    in their order in *pairs*: the reorderings that leave a query's meaning unchanged."""
    values: dict[str, list[str]] = {}
    for name, value in reversed(pairs):
        values.setdefault(name, []).append(value)
    return [(name, values[name].pop()) for name, _ in shuffled]


def status_of(response: httpx.Response) -> dict[str, Any]:
    """The Cache-Status member of this cache, parsed as RFC 9211/9651 say."""
    parsed = http_sf.parse(response.headers["cache-status"].encode(), tltype="list")
    assert len(parsed) == 1
    item, params = parsed[0]
    assert str(item) == "ratelimit-mw"
    return {k: str(v) if not isinstance(v, bool | int) else v for k, v in params.items()}


def is_hit(response: httpx.Response) -> bool:
    return status_of(response).get("hit") is True


def _memory(cache: AnyCache) -> MemoryCache | None:
    if isinstance(cache, AsyncMemoryCache):
        return cache.sync
    return cache if isinstance(cache, MemoryCache) else None


async def _redis_keys(cache: AsyncRedisCache | RedisCache) -> list[bytes]:
    found = cache.client.scan_iter(match="rlmw:cache:*")
    if isinstance(cache, AsyncRedisCache):
        return [key async for key in found]
    return list(found)


async def stored_values(cache: AnyCache) -> list[str]:
    """Every value in the store, raw (JSON text), for looking at what was kept."""
    memory = _memory(cache)
    if memory is not None:
        return [raw for _, raw in memory._data.values()]
    assert isinstance(cache, AsyncRedisCache | RedisCache)
    values = []
    for key in await _redis_keys(cache):
        if await settle(cache.client.type(key)) == b"string":
            values.append((await settle(cache.client.get(key))).decode())
    return values


async def overwrite(cache: AnyCache, which: str, raw: bytes) -> int:
    """Replace every stored entry (``which="entry"``) or URI record (``"record"``) by *raw*."""
    def chosen(key: str) -> bool:
        if key.endswith(("#tag", ":lock")):
            return False
        return (":v" in key.rsplit("#", 1)[1]) is (which == "entry")

    memory = _memory(cache)
    if memory is not None:
        keys: list[Any] = [k for k in memory._data if chosen(k)]
        for key in keys:
            until, old = memory._data[key]
            memory._data[key] = (until, raw.decode("latin-1"))
            memory._bytes += len(raw) - len(old)  # the count max_bytes bounds stays true
        return len(keys)
    assert isinstance(cache, AsyncRedisCache | RedisCache)
    keys = [k for k in await _redis_keys(cache) if chosen(k.decode())]
    for key in keys:
        await settle(cache.client.set(key, raw, keepttl=True))
    return len(keys)
