"""The example apps the middleware is put in front of, shared by the ASGI, WSGI and
integration tests (test modules import from here, never from each other)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

# -- Starlette -----------------------------------------------------------------------------

calls: list[str] = []


async def echo(request: Request) -> PlainTextResponse:
    calls.append(request.url.path)
    return PlainTextResponse("ok")


async def decision(request: Request) -> JSONResponse:
    found = request.state.ratelimit
    return JSONResponse({"allowed": found.allowed, "rule": found.plan.rule,
                         "remaining": [q.remaining for q in found.quotas]})


async def state(request: Request) -> JSONResponse:
    """Whether the middleware left a decision for this request."""
    return JSONResponse({"decision": "ratelimit" in request.scope.get("state", {})})


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"chunk{i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/plain")


starlette_app = Starlette(routes=[
    Route("/login", echo, methods=["POST"]),
    Route("/items/{id}", echo),
    Route("/health", echo),
    Route("/decision", decision),
    Route("/stream", stream),
    Route("/search", echo),
    Route("/state", state),
])


# -- Flask ---------------------------------------------------------------------------------

def flask_app() -> flask.Flask:
    app = flask.Flask(__name__)

    @app.post("/login")
    def login() -> str:
        return "ok"

    @app.get("/items/<int:item>")
    def item(item: int) -> str:
        return str(item)

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        decision = flask.request.environ["ratelimit_mw.decision"]
        return {"rule": decision.plan.rule, "remaining": decision.quotas[0].remaining}

    @app.get("/state")
    def state() -> dict[str, Any]:
        return {"decision": "ratelimit_mw.decision" in flask.request.environ}

    return app
