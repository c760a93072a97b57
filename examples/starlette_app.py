"""A Starlette app behind ratelimit-mw: the project's demo.

Run it (in-memory counters, unless $REDIS_URL points at a Redis)::

    python examples/starlette_app.py [--host 127.0.0.1] [--port 8000]

It prints curl commands to try. The websocket route needs a websocket library in the
server (``pip install websockets``); everything else runs on a bare uvicorn.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ratelimit_mw import Decision, RateLimitMiddleware, Rule, limit

# First match wins; anything no rule matches shares one "60/minute" budget per client.
# Limits can sit on the endpoint instead (see login below): both forms mix.
RULES = [
    # A template, not a path: /items/1 and /items/2 draw from the same counter, so a
    # client cannot dodge the limit by walking the ids.
    Rule("/items/{id}", "10/minute"),
    # Load balancers poll this; limiting it would take the app out of rotation.
    Rule("/health", exempt=True),
]


def usage(base: str) -> str:
    """What to try against a server at *base* (printed at start-up and served at /)."""
    return f"""\
ratelimit-mw demo: Starlette at {base}

# 5/minute on POST /login: 200 five times, then 429
for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "%{{http_code}}\\n" -X POST {base}/login; done
# the 429 itself: Retry-After and an application/problem+json body
curl -i -X POST {base}/login
# 10/minute, one counter for every /items/<id>; the handler echoes its quota
curl -i {base}/items/1
# exempt: no quota headers, never limited
curl -i {base}/health
# streamed, counted against the 60/minute default
curl -N -i {base}/stream
"""


def quota_info(decision: Decision | None) -> dict[str, object]:
    """The decision as JSON, to show what a handler can read."""
    if decision is None:  # an exempt route: the middleware decided nothing
        return {}
    # quotas is empty when the storage failed and on_storage_error let the request in.
    quota = decision.quotas[0] if decision.quotas else None
    return {
        "allowed": decision.allowed,
        "rule": decision.plan.rule,
        "limit": quota.limit.amount if quota else None,
        "remaining": quota.remaining if quota else None,
    }


async def home(request: Request) -> Response:
    return PlainTextResponse(usage(str(request.base_url).rstrip("/")))


# Password guessing is the abuse to stop. The route takes POST only, so only POST counts;
# the middleware finds this limit from the router, under the route's own path.
@limit("5/minute")
async def login(request: Request) -> Response:
    return JSONResponse({"status": "ok", "detail": "this demo checks no passwords"})


async def item(request: Request) -> Response:
    # The middleware leaves its decision in scope["state"], i.e. request.state.
    decision: Decision = request.state.ratelimit
    return JSONResponse({"item_id": int(request.path_params["id"]),
                         "ratelimit": quota_info(decision)})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[str]:
        for number in range(1, 4):
            yield f"chunk {number}\n"
            await asyncio.sleep(0.1)  # slow enough to watch with curl -N

    # The quota headers go out with the first message; the body streams untouched.
    return StreamingResponse(chunks(), media_type="text/plain")


async def echo(websocket: WebSocket) -> None:
    # The handshake was counted before we got here (the default budget, as no rule
    # matches /ws); a refused one never reaches this handler.
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(f"echo: {text}")
    await websocket.close()


def create_app(storage: str | None = None) -> RateLimitMiddleware:
    """A fresh app with fresh counters; *storage* ``None`` means $REDIS_URL, else memory."""
    starlette_app = Starlette(
        routes=[
            Route("/", home),
            Route("/login", login, methods=["POST"]),
            Route("/items/{id:int}", item),
            Route("/health", health),
            Route("/stream", stream),
            WebSocketRoute("/ws", echo),
        ],
    )
    # The middleware closes the limiter it builds at lifespan shutdown: nothing to do here.
    # Outermost, so a refused request costs one storage round trip and nothing else.
    return RateLimitMiddleware(
        starlette_app, storage=storage, default_limits="60/minute", rules=RULES
    )


app = create_app()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the ratelimit-mw Starlette demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    import uvicorn  # only the server needs it, not `from starlette_app import app`

    print(usage(f"http://{args.host}:{args.port}"), flush=True)
    print(f"counting with {app.limiter!r}\n", flush=True)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
