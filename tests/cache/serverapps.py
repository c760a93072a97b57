"""Apps behind the cache that the real-server tests serve (uvicorn, gunicorn).

The servers import them by name (``uvicorn --factory tests.cache.serverapps:create_asgi_app``,
``gunicorn 'tests.cache.serverapps:create_wsgi_app()'``), so they are configured by
environment: ``RLMW_CACHE_STORE`` is ``memory`` or a Redis URL.

Routes: ``GET /item`` answers ``version <n>`` fresh for a minute; ``POST /item`` moves to
the next version. ``GET /flaky`` answers ``up <n>`` fresh for a second, with
``stale-if-error=$RLMW_CACHE_SIE``, except while it is down: ``POST /down?seconds=10``
makes it answer 500 for ten seconds from then. ``/health`` is exempt from the cache.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
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
    flaky = _Versions()
    down_until = [0.0]

    async def down(request: Request) -> PlainTextResponse:
        down_until[0] = time.time() + float(request.query_params["seconds"])
        return PlainTextResponse("down")

    async def flaky_item(request: Request) -> PlainTextResponse:
        if time.time() < down_until[0]:
            return PlainTextResponse("down", status_code=500)
        window = os.environ.get("RLMW_CACHE_SIE", "60")
        return PlainTextResponse(f"up {flaky.bump()}", headers={
            "Cache-Control": f"max-age=1, stale-if-error={window}"})

    async def item(request: Request) -> PlainTextResponse:
        if request.method == "POST":
            return PlainTextResponse(f"now {versions.bump()}")
        return PlainTextResponse(f"version {versions.current}",
                                 headers={"Cache-Control": "max-age=60"})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/item", item, methods=["GET", "POST"]),
                            Route("/flaky", flaky_item), Route("/down", down, methods=["POST"]),
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
