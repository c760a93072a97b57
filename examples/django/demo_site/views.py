from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from ratelimit_mw import Decision

USAGE = """\
ratelimit-mw demo: Django at {base}

# 5/minute on POST /login: 200 five times, then 429 (application/problem+json)
for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "%{{http_code}}\\n" -X POST {base}/login; done
# 10/minute, one counter for every /items/<id>; the view returns the decision it read
curl -i {base}/items/1
# exempt: no quota headers, never limited
curl -i {base}/health
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
