"""A FastAPI app behind ratelimit-mw, with an API-key limit and handlers that read the decision.

Run it (in-memory counters, unless $REDIS_URL points at a Redis)::

    python examples/fastapi_app.py [--host 127.0.0.1] [--port 8000]

then, for instance::

    curl -i -H 'X-API-Key: alice' 'http://127.0.0.1:8000/api/search?q=redis'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse

from ratelimit_mw import Decision, RateLimitMiddleware, Rule, keys, limit

# Limits can also sit on the endpoint (see login below); rules here are tried first.
RULES = [
    # /items/1 and /items/2 share this counter: ids are not a way around the limit.
    Rule("/items/{id}", "10/minute"),
    # The budget belongs to the API key, wherever its requests come from; callers without
    # a key are counted by their IP, so leaving it out is no way around the limit either.
    Rule("/api/{rest:path}", "20/minute", key=keys.api_key("X-API-Key")),
    Rule("/health", exempt=True),
]

USAGE = """\
ratelimit-mw demo: FastAPI at {base}

# 5/minute on POST /login: 200 five times, then 429 (application/problem+json)
for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "%{{http_code}}\\n" -X POST {base}/login; done
# 10/minute, one counter for every /items/<id>; the response shows the handler's view
curl -i {base}/items/1
# 20/minute per API key: alice and bob have a budget each
curl -i -H 'X-API-Key: alice' '{base}/api/search?q=redis'
# exempt: no quota headers, never limited
curl -i {base}/health
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


def build_api() -> FastAPI:
    """The application itself; it knows nothing of rate limits but what it reads."""
    api = FastAPI(title="ratelimit-mw demo", lifespan=_lifespan)

    @api.get("/", response_class=PlainTextResponse)
    async def home(request: Request) -> str:
        return USAGE.format(base=str(request.base_url).rstrip("/"))

    # Found from FastAPI's routes at startup, under the route's path and method (POST).
    @api.post("/login")
    @limit("5/minute")
    async def login() -> dict[str, str]:
        return {"status": "ok", "detail": "this demo checks no passwords"}

    @api.get("/items/{item_id}")
    async def item(item_id: int, request: Request) -> dict[str, object]:
        # The middleware puts its Decision in scope["state"], which is request.state.
        decision: Decision = request.state.ratelimit
        return {"item_id": item_id, "ratelimit": quota_info(decision)}

    @api.get("/api/search")
    async def search(q: str, request: Request) -> dict[str, object]:
        decision: Decision = request.state.ratelimit
        # plan.identity is who was counted: "key:<hash>" or, without a key, "ip:<address>".
        counted_as = decision.plan.identity.split(":", 1)[0]
        return {"query": q, "results": [], "counted_as": counted_as,
                "ratelimit": quota_info(decision)}

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            for number in range(1, 4):
                yield f"chunk {number}\n"
                await asyncio.sleep(0.1)

        return StreamingResponse(chunks(), media_type="text/plain")

    @api.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(f"echo: {await websocket.receive_text()}")
        await websocket.close()

    return api


@contextlib.asynccontextmanager
async def _lifespan(api: FastAPI) -> AsyncIterator[None]:
    yield
    # Redis connections belong to the server's event loop: close them on it.
    await api.state.limiter.aclose()


def create_app(storage: str | None = None) -> RateLimitMiddleware:
    """A fresh app with fresh counters; *storage* ``None`` means $REDIS_URL, else memory."""
    api = build_api()
    # Around the whole app rather than api.add_middleware(): a refused request is
    # answered before FastAPI routes, validates or runs a dependency.
    middleware = RateLimitMiddleware(api, storage=storage, default_limits="60/minute",
                                     rules=RULES)
    api.state.limiter = middleware.limiter
    return middleware


app = create_app()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the ratelimit-mw FastAPI demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    import uvicorn

    print(USAGE.format(base=f"http://{args.host}:{args.port}"), flush=True)
    print(f"counting with {app.limiter!r}\n", flush=True)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
