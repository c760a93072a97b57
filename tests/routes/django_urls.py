"""A URLconf for the route-discovery tests: path() converters, re_path(), include()."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path, re_path

from ratelimit_mw import exempt, limit


@limit("2/minute")
def login(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@limit("3/minute")
def item(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(f"item {pk}")


@limit("2/minute", name="archive")
def archive(request: HttpRequest, year: str) -> HttpResponse:
    return HttpResponse(f"archive {year}")


@exempt
def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("plain")


def whoami(request: HttpRequest) -> HttpResponse:
    """What ratelimit_mw.django.RateLimitMiddleware left at request.ratelimit."""
    decision = getattr(request, "ratelimit", "absent")
    if decision is None or decision == "absent":
        return JsonResponse({"decision": decision})
    return JsonResponse({"rule": decision.plan.rule, "allowed": decision.allowed})


@limit("2/minute")
async def slow(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"rule": request.ratelimit.plan.rule})  # type: ignore[attr-defined]


def too_many(request: HttpRequest) -> HttpResponse:
    """A limited_view: the project's own 429 page."""
    return HttpResponse(f"slow down ({request.ratelimit.violated[0]})",  # type: ignore[attr-defined]
                        status=429, content_type="text/plain")


api = [path("items/<int:pk>/", item)]

urlpatterns = [
    path("login", login),
    path("api/", include(api)),
    re_path(r"^archive/(?P<year>[0-9]{4})/$", archive),
    path("health", health),
    path("plain", plain),
    path("whoami", whoami),
    path("slow", slow),
]
