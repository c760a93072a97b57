"""The one small app every variant is built from, bare or behind a rate limiter.

ASGI: a Starlette app with ``GET /items/{id}`` returning a small JSON body. WSGI: the same
route on Flask. Every limiter gets one limit (``per_minute``/minute, generous by default so
nothing is refused while measuring), keyed by the client IP, with its quota headers on
where the library has them.

=================  ===========================================================
variant            how it is wired
=================  ===========================================================
``bare``           the app alone
``ratelimit-mw``   ``RateLimitMiddleware`` / ``WSGIRateLimitMiddleware``, default
                   options (fixed window, ``headers="both"``), ``default_limits``
``ratelimit-mw-   the same with ``RedisOptions(batch=False)``: each check its own
unbatched``        ``EVALSHA`` (ASGI, Redis only; shows what batching gives)
``ratelimit-mw-   the same with ``headers="none"`` (memory only; shows what the five
noheaders``        quota header fields cost)
``ratelimit-mw-   the default options, under a flood (``flood.py``); ``-nolocal``:
flood[-nolocal]``  with ``local_denials=False``
``slowapi``        ``@limiter.limit`` on the route, ``headers_enabled=True``
``asgi-ratelimit`` its ``RateLimitMiddleware`` with a ``Rule(minute=N)``; it has no
                   quota headers
``flask-limiter``  ``Limiter(default_limits=...)``, ``RATELIMIT_HEADERS_ENABLED``
``redis-           no limiter: the bare Flask app after one ``PING`` to Redis on a
roundtrip``        kept connection, read by redis-py's parser (Redis only). The floor
                   of any limiter that waits on Redis, as ours does in a sync worker
=================  ===========================================================

``storage`` is ``"memory://"`` or a ``redis://host:port/db`` URL.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ASGI_VARIANTS",
    "BODY",
    "EXPECTED_HEADERS",
    "FLOORS",
    "ITEM_PATH",
    "LIMIT_PER_MINUTE",
    "WSGI_VARIANTS",
    "Built",
    "build_asgi",
    "build_wsgi",
]

ASGI_VARIANTS = ("bare", "ratelimit-mw", "ratelimit-mw-unbatched", "ratelimit-mw-noheaders",
                 "slowapi", "asgi-ratelimit")
#: Our middleware with one option changed, to show what that option costs; measured on
#: the one storage where it makes a difference.
ONLY_ON = {"ratelimit-mw-unbatched": "redis", "ratelimit-mw-noheaders": "memory",
           "redis-roundtrip": "redis"}


def measured_on(variant: str, storage: str) -> bool:
    """Whether *variant* is measured on *storage* (``"memory"`` or ``"redis"``)."""
    return ONLY_ON.get(variant, storage) == storage
WSGI_VARIANTS = ("bare", "ratelimit-mw", "ratelimit-mw-noheaders", "flask-limiter",
                 "redis-roundtrip")
#: Variants without a limiter: what the others are measured against, beside ``bare``.
FLOORS = ("redis-roundtrip",)
#: Ours under a flood (``flood.py``), with and without repeating refusals locally.
FLOOD_VARIANTS = ("ratelimit-mw-flood", "ratelimit-mw-flood-nolocal")
#: Generous: nothing may be refused during a measurement.
LIMIT_PER_MINUTE = 1_000_000
#: The path every measurement requests.
ITEM_PATH = "/items/42"
#: What ``GET /items/42`` answers, byte for byte, in both apps.
BODY = {"id": 42, "name": "widget", "price": 9.99}

#: The quota headers each variant must send on a 200 (lower-case); ``()``: it has none.
EXPECTED_HEADERS: dict[str, tuple[str, ...]] = {
    "bare": (),
    "ratelimit-mw": ("ratelimit-policy", "ratelimit", "x-ratelimit-limit",
                     "x-ratelimit-remaining", "x-ratelimit-reset"),
    "ratelimit-mw-unbatched": ("ratelimit-policy", "ratelimit", "x-ratelimit-limit",
                               "x-ratelimit-remaining", "x-ratelimit-reset"),
    "ratelimit-mw-noheaders": (),
    "ratelimit-mw-flood": ("ratelimit-policy", "ratelimit"),
    "ratelimit-mw-flood-nolocal": ("ratelimit-policy", "ratelimit"),
    "slowapi": ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"),
    "asgi-ratelimit": (),
    "flask-limiter": ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"),
    "redis-roundtrip": (),
}

Closer = Callable[[], "Awaitable[None] | None"]


@dataclass
class Built:
    """An app and what releases its storage connections (sync or async callables)."""

    app: Any
    closers: list[Closer] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in self.closers:
            result = close()
            if inspect.isawaitable(result):
                await result

    def close(self) -> None:
        for close in self.closers:
            result = close()
            if inspect.isawaitable(result):  # pragma: no cover - no async closer on WSGI
                raise TypeError("an async closer on a WSGI app")


def _redis_client_closer(storage: Any) -> list[Closer]:
    """Closes the redis-py client inside a sync ``limits`` storage (slowapi, Flask-Limiter)."""
    client = getattr(storage, "storage", None)
    close = getattr(client, "close", None)
    return [close] if callable(close) else []


def _item(item_id: int) -> dict[str, Any]:
    return {**BODY, "id": item_id}


# --------------------------------------------------------------------------- ASGI


def _starlette(endpoint: Callable[..., Any], **kwargs: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Route

    return Starlette(routes=[Route("/items/{id:int}", endpoint, methods=["GET"])], **kwargs)


async def _item_endpoint(request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(_item(request.path_params["id"]))


def build_asgi(variant: str, storage: str = "memory://",
               per_minute: int = LIMIT_PER_MINUTE, limit: str | None = None) -> Built:
    """The Starlette app for *variant* (one of :data:`ASGI_VARIANTS` or
    :data:`FLOOD_VARIANTS`) on *storage*; *limit* replaces ``per_minute``'s."""
    limit = limit or f"{per_minute}/minute"
    if variant == "bare":
        return Built(_starlette(_item_endpoint))
    if variant.startswith("ratelimit-mw"):
        from ratelimit_mw import RateLimitMiddleware

        middleware = RateLimitMiddleware(_starlette(_item_endpoint), storage=storage,
                                         default_limits=limit, **_our_options(variant))
        return Built(middleware, [middleware.limiter.aclose])
    if variant == "slowapi":
        return _slowapi(storage, limit)
    if variant == "asgi-ratelimit":
        return _asgi_ratelimit(storage, per_minute)
    raise ValueError(f"unknown ASGI variant {variant!r}; use one of {ASGI_VARIANTS}")


def _slowapi(storage: str, limit: str) -> Built:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    limiter = Limiter(key_func=get_remote_address, storage_uri=storage,
                      headers_enabled=True, key_style="endpoint")

    # slowapi finds the request by the parameter's name, and needs a Response back.
    @limiter.limit(limit)
    async def item(request: Request) -> JSONResponse:
        return JSONResponse(_item(request.path_params["id"]))

    app = _starlette(item, exception_handlers={
        RateLimitExceeded: _rate_limit_exceeded_handler})
    app.state.limiter = limiter
    return Built(app, _redis_client_closer(limiter._storage))


def _asgi_ratelimit(storage: str, per_minute: int) -> Built:
    from ratelimit import RateLimitMiddleware
    from ratelimit import Rule as ARRule
    from ratelimit.backends.simple import MemoryBackend

    backend: Any
    closers: list[Closer] = []
    if storage.startswith("memory://"):
        backend = MemoryBackend()  # type: ignore[no-untyped-call]
    else:
        from ratelimit.backends.redis import RedisBackend
        from redis.asyncio import StrictRedis

        client = StrictRedis.from_url(storage)
        backend = RedisBackend(client)
        closers.append(client.aclose)

    # Its own ratelimit.auths.ip.client_ip refuses loopback peers (not "global"
    # addresses); key by the socket peer, as every other variant does.
    async def by_client_ip(scope: MutableMapping[str, Any]) -> tuple[str, str]:
        return scope["client"][0], "default"

    app = RateLimitMiddleware(_starlette(_item_endpoint), by_client_ip, backend,
                              {r"^/items/": [ARRule(minute=per_minute)]})
    return Built(app, closers)


def _our_options(variant: str) -> dict[str, Any]:
    from ratelimit_mw import RedisOptions

    return {"ratelimit-mw": {},
            "ratelimit-mw-unbatched": {"redis_options": RedisOptions(batch=False)},
            "ratelimit-mw-noheaders": {"headers": "none"},
            "ratelimit-mw-flood": {},
            "ratelimit-mw-flood-nolocal": {"local_denials": False}}[variant]


# --------------------------------------------------------------------------- WSGI


def _flask() -> Any:
    from flask import Flask, jsonify

    app = Flask("benchmarks")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return jsonify(_item(item_id))

    return app


def build_wsgi(variant: str, storage: str = "memory://",
               per_minute: int = LIMIT_PER_MINUTE) -> Built:
    """The Flask app for *variant* (one of :data:`WSGI_VARIANTS`) on *storage*."""
    limit = f"{per_minute}/minute"
    if variant not in WSGI_VARIANTS:
        raise ValueError(f"unknown WSGI variant {variant!r}; use one of {WSGI_VARIANTS}")
    app = _flask()
    if variant.startswith("ratelimit-mw"):
        from ratelimit_mw import WSGIRateLimitMiddleware

        middleware = WSGIRateLimitMiddleware(app.wsgi_app, storage=storage,
                                             default_limits=limit, **_our_options(variant))
        app.wsgi_app = middleware
        return Built(app, [middleware.limiter.close])
    if variant == "redis-roundtrip":
        return _redis_roundtrip(app, storage)
    if variant == "flask-limiter":
        from flask_limiter import Limiter
        from flask_limiter.util import get_remote_address

        app.config["RATELIMIT_HEADERS_ENABLED"] = True
        limiter = Limiter(get_remote_address, app=app, default_limits=[limit],
                          storage_uri=storage, headers_enabled=True)
        return Built(app, _redis_client_closer(limiter.storage))
    return Built(app)


def _redis_roundtrip(app: Any, storage: str) -> Built:
    """*app* after one ``PING`` a request, on a connection kept by the process."""
    import redis

    client: Any = redis.Redis.from_url(storage)
    connection = client.connection_pool.get_connection()
    ping = (b"*1\r\n$4\r\nPING\r\n",)
    inner = app.wsgi_app

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
        connection.send_packed_command(ping)
        connection.read_response()
        return inner(environ, start_response)

    app.wsgi_app = wsgi_app

    def close() -> None:
        client.connection_pool.release(connection)
        client.close()

    return Built(app, [close])
