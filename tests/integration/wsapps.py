"""A websocket echo app under message limits, served by uvicorn and hypercorn in
``test_message_limits.py``.

``RLMW_TEST_STORAGE`` is the storage URL (required). ``/ws`` echoes every text and
closes (1000) after echoing ``bye``; its handshake is limited (``100/minute``) and its
messages too (``5/second``). When a connection ends the app prints ``wsapps
received=<n> code=<close code>`` to stderr: how many texts its ``receive()`` gave it and
how the connection ended, for the test to read in the server's log. ``/health`` is
exempt.
"""

from __future__ import annotations

import os
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ratelimit_mw import RateLimitMiddleware, Rule


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    received = 0
    code = 1000
    try:
        while True:
            text = await websocket.receive_text()
            received += 1
            await websocket.send_text(text)
            if text == "bye":
                await websocket.close(1000)
                break
    except WebSocketDisconnect as disconnect:
        code = disconnect.code
    print(f"wsapps received={received} code={code}", file=sys.stderr, flush=True)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = RateLimitMiddleware(
    Starlette(routes=[WebSocketRoute("/ws", echo), Route("/health", health)]),
    storage=os.environ["RLMW_TEST_STORAGE"],
    rules=[Rule("/ws", "100/minute", messages="5/second"), Rule("/health", exempt=True)],
)
