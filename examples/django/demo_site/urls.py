from __future__ import annotations

from django.urls import path

from . import views

# No trailing slashes, so the paths are the ones the rate-limit rules name. (The
# middleware normalises /login/ to /login anyway: a slash is no way around a rule.)
urlpatterns = [
    path("", views.home),
    path("login", views.login),
    path("items/<int:item_id>", views.item),
    path("health", views.health),
    path("stream", views.stream),
]
