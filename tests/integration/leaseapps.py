"""Apps under concurrency rules, served by uvicorn and gunicorn in
``test_concurrency_servers.py`` and configured by environment, read when a worker builds
its app:

``RLMW_TEST_STORAGE``        storage URL (required)
``RLMW_TEST_CONCURRENCY``    slots on ``/slow`` (default 2)
``RLMW_TEST_LEASE_TIMEOUT``  its ``concurrency_timeout`` in seconds (default 60)

Every limited route has one identity for every client (``keys.shared()``).

``create_asgi_app`` (Starlette, ``uvicorn --factory``): ``/slow?s=1`` answers after *s*
seconds; ``/stream?n=100`` streams *n* chunks 100 ms apart under ``concurrency=1``
(Starlette's StreamingResponse listens for ``http.disconnect`` meanwhile); ``/peak``
(exempt) is the most ``/slow`` requests the process was serving at once.

``create_wsgi_app`` (plain WSGI, ``gunicorn 'module:create_wsgi_app()'``, sync workers):
``/slow?s=1`` answers after *s* seconds and prints ``leaseapps slow pid=<pid>`` to
stderr when it starts; ``/pid`` (exempt) is the worker's pid.

``/health`` is exempt. Each worker prints the ready line of
:mod:`tests.integration.serverapps` once its app is built, for
``Server.ready_pids()``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import parse_qs

from ratelimit_mw import RateLimitMiddleware, Rule, WSGIRateLimitMiddleware, keys
from ratelimit_mw._types import ASGIApp, Environ, StartResponse

__all__ = ["SLOW_STARTED", "create_asgi_app", "create_wsgi_app"]

#: ``serverapps.READY``, which ``Server.ready_pids()`` counts. Not imported: serverapps
#: loads Flask, a second more for every gunicorn worker to boot (one replaces a killed
#: worker while a 2 s lease runs out).
READY = "serverapps ready pid="
SLOW_STARTED = "leaseapps slow pid="


def _rules(*exempt: str) -> list[Rule]:
    env = os.environ
    return [
        Rule("/slow", concurrency=int(env.get("RLMW_TEST_CONCURRENCY", "2")),
             concurrency_timeout=float(env.get("RLMW_TEST_LEASE_TIMEOUT", "60")),
             key=keys.shared()),
        Rule("/stream", concurrency=1, key=keys.shared()),
        *(Rule(path, exempt=True) for path in (*exempt, "/health")),
    ]


def _announce() -> None:
    print(f"{READY}{os.getpid()}", file=sys.stderr, flush=True)


def create_asgi_app() -> ASGIApp:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    in_flight = peak = 0

    async def slow(request: Request) -> PlainTextResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(float(request.query_params.get("s", "1")))
        finally:
            in_flight -= 1
        return PlainTextResponse("ok")

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(int(request.query_params.get("n", "100"))):
                yield b"chunk\n"
                await asyncio.sleep(0.1)

        return StreamingResponse(chunks(), media_type="text/plain")

    async def show_peak(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(peak))

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    starlette = Starlette(routes=[Route("/slow", slow), Route("/stream", stream),
                                  Route("/peak", show_peak), Route("/health", health)])
    app = RateLimitMiddleware(starlette, storage=os.environ["RLMW_TEST_STORAGE"],
                              on_storage_error="deny", rules=_rules("/peak"))
    _announce()
    return app


def create_wsgi_app() -> Any:
    pid = os.getpid()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/slow":
            print(f"{SLOW_STARTED}{pid}", file=sys.stderr, flush=True)
            query = parse_qs(environ.get("QUERY_STRING", ""))
            time.sleep(float(query.get("s", ["1"])[0]))
        body = str(pid).encode() if path == "/pid" else b"ok"
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    limited = WSGIRateLimitMiddleware(app, storage=os.environ["RLMW_TEST_STORAGE"],
                                      on_storage_error="deny", rules=_rules("/pid"))
    _announce()
    return limited
