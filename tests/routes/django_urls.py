"""A URLconf for the route-discovery tests: path() converters, re_path(), include()."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
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


api = [path("items/<int:pk>/", item)]

urlpatterns = [
    path("login", login),
    path("api/", include(api)),
    re_path(r"^archive/(?P<year>[0-9]{4})/$", archive),
    path("health", health),
    path("plain", plain),
]
