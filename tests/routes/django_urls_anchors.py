"""A URLconf whose re_path() holds an anchor inside: read as any text, never narrower."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path, re_path

from ratelimit_mw import limit


@limit("2/minute")
def legacy(request: HttpRequest) -> HttpResponse:
    return HttpResponse("legacy")


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("plain")


urlpatterns = [
    path("plain", plain),
    re_path(r"^legacy/(?:^old|new)$", legacy),
]
