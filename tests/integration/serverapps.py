"""Apps the real-server tests serve with uvicorn and gunicorn, configured by environment.

The servers import them by name in every worker process (``uvicorn --factory
tests.integration.serverapps:create_asgi_app``, ``gunicorn
'tests.integration.serverapps:create_wsgi_app()'``), so the configuration comes from
environment variables, read when a worker builds its app:

``RLMW_TEST_STORAGE``   storage URL (required)
``RLMW_TEST_LIMIT``     the limit on ``/limited``, e.g. ``100/minute`` (required)
``RLMW_TEST_POLICY``    ``on_storage_error``: ``memory`` (default), ``allow`` or ``deny``
``RLMW_TEST_STRATEGY``  ``fixed-window`` (default), ``moving-window``,
                        ``sliding-window-counter``, ``gcra``
``RLMW_TEST_NAME``      the rule's name, the namespace of its counters (default ``limited``)

Routes (GET): ``/limited`` is limited; its key is the ``X-Client`` header when a request
sends one, else one counter shared by every client. ``/fail`` answers 401 after 50 ms,
under the same limit counting failures only (``count_when``), one counter for everyone.
``/exempt`` and ``/health`` are exempt (``Rule(path, exempt=True)``). Every response,
refused ones included, carries ``X-Worker-Pid``. Each worker prints ``serverapps ready
pid=<pid>`` to stderr once its app is built, so a test can wait for all the workers.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ratelimit_mw import RateLimitMiddleware, Rule, WSGIRateLimitMiddleware, keys
from ratelimit_mw._types import ASGIApp, Environ, Message, Receive, Scope, Send, StartResponse

__all__ = ["READY", "create_asgi_app", "create_wsgi_app"]

#: What each worker prints to stderr once its app is built.
READY = "serverapps ready pid="
PID_HEADER = "X-Worker-Pid"


def _options() -> dict[str, Any]:
    env = os.environ
    missing = [name for name in ("RLMW_TEST_STORAGE", "RLMW_TEST_LIMIT") if not env.get(name)]
    if missing:
        raise RuntimeError(f"serverapps: set {', '.join(missing)}")
    name = env.get("RLMW_TEST_NAME", "limited")
    return {
        "storage": env["RLMW_TEST_STORAGE"],
        "on_storage_error": env.get("RLMW_TEST_POLICY", "memory"),
        "strategy": env.get("RLMW_TEST_STRATEGY", "fixed-window"),
        "rules": [
            Rule("/limited", env["RLMW_TEST_LIMIT"], name=name,
                 key=[keys.header("X-Client", hashed=False), keys.shared()]),
            # Counts failures only; the app answers 401 after a pause, so that requests
            # overlap in every worker.
            Rule("/fail", env["RLMW_TEST_LIMIT"], name=f"{name}-fail", key=keys.shared(),
                 count_when=lambda response: response.status >= 400),
            Rule("/exempt", exempt=True),
            Rule("/health", exempt=True),
        ],
    }


def _announce() -> None:
    print(f"{READY}{os.getpid()}", file=sys.stderr, flush=True)


class _PidHeader:
    """Adds ``X-Worker-Pid`` to every HTTP response (outside the rate limiter)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = (PID_HEADER.lower().encode(), str(os.getpid()).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_pid)


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _fail(request: Request) -> PlainTextResponse:
    await asyncio.sleep(0.05)
    return PlainTextResponse("no", status_code=401)


def create_asgi_app() -> ASGIApp:
    """A Starlette app behind :class:`RateLimitMiddleware` (``uvicorn --factory``)."""
    starlette = Starlette(routes=[*(Route(path, _ok) for path in ("/limited", "/exempt",
                                                                    "/health")),
                                  Route("/fail", _fail)])
    app = _PidHeader(RateLimitMiddleware(starlette, **_options()))
    _announce()
    return app


def create_wsgi_app() -> Any:
    """A Flask app behind :class:`WSGIRateLimitMiddleware` (``gunicorn 'module:f()'``)."""
    app = flask.Flask("serverapps")

    def ok() -> str:
        return "ok"

    def fail() -> tuple[str, int]:
        time.sleep(0.05)
        return "no", 401

    for path in ("/limited", "/exempt", "/health"):
        app.add_url_rule(path, path.strip("/"), ok)
    app.add_url_rule("/fail", "fail", fail)
    limited = WSGIRateLimitMiddleware(app.wsgi_app, **_options())
    pid = str(os.getpid())

    def with_pid(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            return start_response(status, [*headers, (PID_HEADER, pid)], *exc_info)

        return limited(environ, start)

    app.wsgi_app = with_pid  # type: ignore[method-assign]
    _announce()
    return app
