"""ASGI entry point: Django's application inside the rate-limit middleware.

``uvicorn demo_site.asgi:application`` (run from examples/django), or hypercorn or
granian with the same target. Django's own ASGI handler speaks HTTP only, so
:class:`DemoSite` answers the two other kinds of connection itself: the lifespan
protocol (whose shutdown lets the middleware close its Redis connections) and a
websocket echo at ``/ws`` (a real project would use Django Channels there). The
middleware sits outside all of it, so websocket handshakes are limited like requests.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application

from ratelimit_mw import RateLimitMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class DemoSite:
    """Django for HTTP; the lifespan protocol and a websocket echo at ``/ws`` beside it."""

    def __init__(self, django_app: ASGIApp) -> None:
        self.django_app = django_app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] == "http":
            await self.django_app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)
        elif scope["type"] == "websocket":
            await websocket_echo(scope, receive, send)


async def lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop here; the middleware closes its limiter on the way out."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def websocket_echo(scope: MutableMapping[str, Any], receive: Receive,
                         send: Send) -> None:
    """Echo one text message at /ws, then close; refuse the handshake anywhere else.

    The handshake was counted before we got here (the default budget, as no rule matches
    /ws); a refused one never reaches this code.
    """
    if (await receive())["type"] != "websocket.connect":
        return
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1000})  # before accept: a 403
        return
    await send({"type": "websocket.accept"})
    message = await receive()
    if message["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": f"echo: {message.get('text') or ''}"})
        await send({"type": "websocket.close", "code": 1000})


def create_application(storage: str | None = None) -> RateLimitMiddleware:
    """A fresh middleware (fresh counters) around Django; *storage* overrides the setting."""
    django_app = get_asgi_application()  # sets Django up, so settings can be read below
    # Outside Django's own middleware: a refused request never reaches a thread or a view.
    return RateLimitMiddleware(
        DemoSite(django_app),
        storage=storage if storage is not None else settings.RATELIMIT_STORAGE,
        default_limits=settings.RATELIMIT_DEFAULT_LIMITS,
        rules=settings.RATELIMIT_RULES,
    )


application = create_application()
