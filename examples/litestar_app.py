"""A Litestar app behind ratelimit-mw: the same routes and limits as the Starlette demo.

Run it (in-memory counters, unless $REDIS_URL points at a Redis)::

    python examples/litestar_app.py [--host 127.0.0.1] [--port 8000]

or serve ``litestar_app:app`` (from examples/) with any ASGI server: uvicorn, hypercorn,
granian. The websocket route needs a websocket library in uvicorn (``websockets`` or
``wsproto``); hypercorn and granian bring their own.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Sequence

from litestar import Litestar, MediaType, Request, WebSocket, get, post, websocket
from litestar.response import Stream

from ratelimit_mw import Decision, RateLimitMiddleware, Rule, limit

# Limits can also sit on the handler (see login below); rules here are tried first.
RULES = [
    # /items/1 and /items/2 share this counter: ids are not a way around the limit.
    Rule("/items/{id}", "10/minute"),
    Rule("/health", exempt=True),
]

USAGE = """\
ratelimit-mw demo: Litestar at {base}

# 5/minute on POST /login: 200 five times, then 429 (application/problem+json)
for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "%{{http_code}}\\n" -X POST {base}/login; done
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


@get("/", media_type=MediaType.TEXT)
async def home(request: Request) -> str:
    return USAGE.format(base=str(request.base_url).rstrip("/"))


# Litestar answers a POST with 201 unless told otherwise; a login creates nothing.
# Found from Litestar's routes, under the handler's path and methods (POST).
@post("/login", status_code=200)
@limit("5/minute")
async def login() -> dict[str, str]:
    return {"status": "ok", "detail": "this demo checks no passwords"}


@get("/items/{item_id:int}")
async def item(request: Request) -> dict[str, object]:
    # The middleware leaves its Decision in scope["state"], which request.state reads.
    decision: Decision = request.state.ratelimit
    # From path_params rather than an `item_id: int` argument, which Litestar 2.2x
    # deprecates in favour of a marker older 2.x releases do not have.
    return {"item_id": request.path_params["item_id"], "ratelimit": quota_info(decision)}


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/stream")
async def stream() -> Stream:
    async def chunks() -> AsyncIterator[str]:
        for number in range(1, 4):
            yield f"chunk {number}\n"
            await asyncio.sleep(0.1)  # slow enough to watch with curl -N

    # The quota headers go out with the first message; the body streams untouched.
    return Stream(chunks(), media_type=MediaType.TEXT)


@websocket("/ws")
async def echo(socket: WebSocket) -> None:
    # The handshake was counted before we got here (the default budget, as no rule
    # matches /ws); a refused one never reaches this handler.
    await socket.accept()
    text = await socket.receive_text()
    await socket.send_text(f"echo: {text}")
    await socket.close()


def create_app(storage: str | None = None) -> RateLimitMiddleware:
    """A fresh app with fresh counters; *storage* ``None`` means $REDIS_URL, else memory."""
    litestar_app = Litestar(route_handlers=[home, login, item, health, stream, echo])
    # Around the whole app rather than in Litestar's middleware list: a refused request
    # is answered before Litestar routes it or runs a dependency. The middleware closes
    # the limiter it builds at lifespan shutdown, which Litestar reports.
    return RateLimitMiddleware(
        litestar_app, storage=storage, default_limits="60/minute", rules=RULES
    )


app = create_app()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the ratelimit-mw Litestar demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    import uvicorn

    print(USAGE.format(base=f"http://{args.host}:{args.port}"), flush=True)
    print(f"counting with {app.limiter!r}\n", flush=True)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
