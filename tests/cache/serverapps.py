"""Apps behind the cache that the real-server tests serve (uvicorn, gunicorn).

The servers import them by name (``uvicorn --factory tests.cache.serverapps:create_asgi_app``,
``gunicorn 'tests.cache.serverapps:create_wsgi_app()'``), so they are configured by
environment: ``RLMW_CACHE_STORE`` is ``memory`` or a Redis URL.

Routes: ``GET /item`` answers ``version <n>`` fresh for a minute; ``POST /item`` moves to
the next version. ``/health`` is exempt from the cache.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

import flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ratelimit_mw.cache import (
    AsyncMemoryCache,
    AsyncRedisCache,
    CacheRule,
    MemoryCache,
    RedisCache,
    ResponseCacheMiddleware,
    WSGIResponseCacheMiddleware,
)

__all__ = ["create_asgi_app", "create_wsgi_app"]

RULES = [CacheRule("/health", exempt=True)]


class _Versions:
    """The resource's version, moved on by each POST (threads share it under gunicorn)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.current = 0

    def bump(self) -> int:
        with self._lock:
            self.current = next(self._counter)
            return self.current


def create_asgi_app() -> Any:
    versions = _Versions()

    async def item(request: Request) -> PlainTextResponse:
        if request.method == "POST":
            return PlainTextResponse(f"now {versions.bump()}")
        return PlainTextResponse(f"version {versions.current}",
                                 headers={"Cache-Control": "max-age=60"})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/item", item, methods=["GET", "POST"]),
                            Route("/health", health)])
    store = os.environ["RLMW_CACHE_STORE"]
    cache = AsyncMemoryCache() if store == "memory" else AsyncRedisCache(store)
    return ResponseCacheMiddleware(app, cache=cache, rules=RULES)


def create_wsgi_app() -> Any:
    versions = _Versions()
    app = flask.Flask(__name__)

    @app.route("/item", methods=["GET", "POST"])
    def item() -> Any:
        if flask.request.method == "POST":
            return f"now {versions.bump()}"
        return f"version {versions.current}", 200, {"Cache-Control": "max-age=60"}

    @app.get("/health")
    def health() -> str:
        return "ok"

    store = os.environ["RLMW_CACHE_STORE"]
    cache = MemoryCache() if store == "memory" else RedisCache(store)
    return WSGIResponseCacheMiddleware(app.wsgi_app, cache=cache, rules=RULES)
