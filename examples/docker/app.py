"""The app of the Docker Compose example: Starlette behind ratelimit-mw, configured by
the environment.

Everything that can be written down comes from :func:`ratelimit_mw.config.load_settings`:
``REDIS_URL`` picks the storage, ``RATELIMIT_*`` variables the rest (strategy, default
limits, what to do while Redis is down, timeouts), and the rules come from
``$RATELIMIT_CONFIG`` (the image sets it to ``/app/ratelimit.toml``), else from the
``ratelimit.toml`` next to this file. Run it outside Docker the way the image does::

    REDIS_URL=redis://localhost:6379/0 uvicorn app:app --app-dir examples/docker

``/health`` is never rate limited and answers 200 as long as the app serves, Redis or
not: while Redis is down the limiter keeps deciding (``on_storage_error``), so taking the
app out of rotation would only make things worse. The body says how the storage is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ratelimit_mw import AsyncRateLimiter, Decision, RateLimitMiddleware, Rule
from ratelimit_mw.config import ENV_PREFIX, load_settings

#: The rules file used when ``$RATELIMIT_CONFIG`` is not set.
DEFAULT_CONFIG = Path(__file__).resolve().with_name("ratelimit.toml")
#: At most this long for the storage's PING in /health (the socket timeouts cut it shorter).
HEALTH_PING_TIMEOUT = 2.0


async def storage_health(limiter: AsyncRateLimiter) -> dict[str, Any]:
    """Where the counters live (password masked), whether it answers a PING now, and
    whether the limiter's circuit breaker currently skips it."""
    if limiter.memory is not None:
        return {"url": "memory://", "reachable": True, "circuit": "closed"}
    try:
        reachable = await asyncio.wait_for(limiter.ping(), HEALTH_PING_TIMEOUT)
    except Exception:  # a health check reports; it never fails the request
        reachable = False
    return {"url": limiter.display_url, "reachable": bool(reachable),
            "circuit": "open" if limiter.breaker.is_open else "closed"}


async def home(request: Request) -> Response:
    decision: Decision = request.state.ratelimit
    quota = decision.quotas[0] if decision.quotas else None
    return JSONResponse({"hello": "world", "rule": decision.plan.rule,
                         "remaining": quota.remaining if quota else None,
                         "counted_in_fallback": decision.storage_error})


async def login(request: Request) -> Response:
    return JSONResponse({"status": "ok", "detail": "this example checks no passwords"})


def create_app(environ: Mapping[str, str] | None = None) -> RateLimitMiddleware:
    """The app, configured from *environ* (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    config = None if env.get(ENV_PREFIX + "CONFIG") else DEFAULT_CONFIG
    settings = load_settings(config, environ=env)
    options = settings.middleware_options()
    # load_settings already read REDIS_URL from *env*: no storage means memory, not a
    # second look at os.environ.
    options["storage"] = settings.storage or "memory://"
    # The health check must never be limited, whatever the rules file says: a limited
    # probe takes a healthy container out of rotation. First match wins, so it goes first.
    options["rules"] = [Rule("/health", exempt=True), *options["rules"]]

    async def health(request: Request) -> Response:
        storage = await storage_health(middleware.limiter)
        return JSONResponse({"status": "ok" if storage["reachable"] else "degraded",
                             "storage": storage,
                             "on_storage_error": middleware.on_storage_error})

    starlette_app = Starlette(routes=[
        Route("/", home),
        Route("/login", login, methods=["POST"]),
        Route("/health", health),
    ])
    # Outermost: a refused request costs one Redis round trip and nothing else. The
    # middleware closes its Redis pool at lifespan shutdown.
    middleware = RateLimitMiddleware(starlette_app, **options)
    return middleware


app = create_app()
