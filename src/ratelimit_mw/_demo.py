"""The app ``ratelimit-mw demo`` serves: plain ASGI, no framework, memory storage."""

from __future__ import annotations

import json

from ._asgi import RateLimitMiddleware
from ._rules import Rule
from ._types import ASGIApp, Receive, Scope, Send


def usage(base: str) -> str:
    return f"""ratelimit-mw demo at {base} (memory storage)

  # 5/minute on POST /login: 200 five times, then 429 with Retry-After
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "%{{http_code}}\\n" -X POST {base}/login; done
  # the quota headers
  curl -i {base}/items/1
  # exempt: no quota headers
  curl -i {base}/health

"""


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    decision = scope.get("state", {}).get("ratelimit")
    body = json.dumps({
        "path": scope["path"],
        "rule": decision.plan.rule if decision else None,
        "remaining": [q.remaining for q in decision.quotas] if decision else None,
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def build_demo() -> ASGIApp:
    """The demo app behind the middleware, on in-memory storage."""
    return RateLimitMiddleware(_app, storage="memory://", default_limits="60/minute", rules=[
        Rule("/login", "5/minute", methods=["POST"]),
        Rule("/items/{id}", "10/minute"),
        Rule("/health", exempt=True),
    ])
