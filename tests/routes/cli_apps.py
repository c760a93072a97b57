"""Apps for ``ratelimit-mw config --app`` in the tests: a Starlette app behind the
middleware (one rule with a typo), one with the middleware added by ``add_middleware``,
a bare ASGI callable, and websocket routes with message limits."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ratelimit_mw import RateLimitMiddleware, Rule, exempt, limit


@limit("5/minute", methods=["POST"])
async def login(request: Request) -> Response:
    return PlainTextResponse("ok")


@exempt
async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def item(request: Request) -> Response:
    return PlainTextResponse("item")


def routes() -> list[Route]:
    return [Route("/login", login, methods=["GET", "POST"]), Route("/health", health),
            Route("/items/{id:int}", item)]


wrapped = RateLimitMiddleware(
    Starlette(routes=routes()), storage="memory://", default_limits="60/minute",
    rules=[Rule("/items/{id}", "10/minute"), Rule("/itemz/{id}", "1/minute")])

added = Starlette(routes=routes())
added.add_middleware(RateLimitMiddleware, storage="memory://", default_limits="30/minute")


async def bare(scope: Any, receive: Any, send: Any) -> None:
    await PlainTextResponse("bare")(scope, receive, send)


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close()


sockets = RateLimitMiddleware(
    Starlette(routes=[WebSocketRoute("/feed", chat), WebSocketRoute("/chat", chat)]),
    storage="memory://", default_limits="60/minute",
    rules=[Rule("/feed", messages="20/second"),
           Rule("/chat", "10/minute", messages="5/second;100/minute")])
