from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET, require_POST

from ratelimit_mw import Decision, limit

USAGE = """\
ratelimit-mw demo: Django at {base}

# 5/minute on POST /login: 200 five times, then 429 (application/problem+json)
for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "%{{http_code}}\\n" -X POST {base}/login; done
# 10/minute, one counter for every /items/<id>; the view returns the decision it read
curl -i {base}/items/1
# exempt: no quota headers, never limited
curl -i {base}/health
# streamed, counted against the 60/minute default
curl -N -i {base}/stream
"""


def decision_of(request: HttpRequest) -> Decision | None:
    """The middleware's decision for *request*, under WSGI or ASGI."""
    scope = getattr(request, "scope", None)
    decision: Decision | None
    if scope is not None:  # ASGI: the middleware wrote scope["state"]["ratelimit"]
        decision = scope.get("state", {}).get("ratelimit")
    else:  # WSGI: request.META is the environ
        decision = request.META.get("ratelimit_mw.decision")
    return decision


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    base = request.build_absolute_uri("/").rstrip("/")
    return HttpResponse(USAGE.format(base=base), content_type="text/plain")


@limit("5/minute")
@require_POST
def login(request: HttpRequest) -> HttpResponse:
    # No CsrfViewMiddleware in this demo; a real login form keeps it.
    return JsonResponse({"status": "ok", "detail": "this demo checks no passwords"})


@require_GET
def item(request: HttpRequest, item_id: int) -> HttpResponse:
    decision = decision_of(request)
    quota = decision.quotas[0] if decision and decision.quotas else None
    return JsonResponse({"item_id": item_id, "ratelimit": {
        "allowed": decision.allowed if decision else None,
        "rule": decision.plan.rule if decision else None,
        "limit": quota.limit.amount if quota else None,
        "remaining": quota.remaining if quota else None,
    }})


@require_GET
def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def stream(request: HttpRequest) -> StreamingHttpResponse:
    # Django streams an async iterator under ASGI and a sync one under WSGI; given the
    # other kind, it collects the whole body first (and warns).
    if getattr(request, "scope", None) is not None:
        return StreamingHttpResponse(async_chunks(), content_type="text/plain")
    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def async_chunks() -> AsyncIterator[str]:
    for number in range(1, 4):
        yield f"chunk {number}\n"
        await asyncio.sleep(0.1)  # slow enough to watch with curl -N


def chunks() -> Iterator[str]:
    for number in range(1, 4):
        yield f"chunk {number}\n"
        time.sleep(0.1)
