"""WSGI entry point: Django's application inside the rate-limit middleware.

``gunicorn demo_site.wsgi`` (run from examples/django) or ``manage.py runserver`` serve it.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from ratelimit_mw import WSGIRateLimitMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")


def create_application(storage: str | None = None) -> WSGIRateLimitMiddleware:
    """A fresh middleware (fresh counters) around Django; *storage* overrides the setting."""
    django_app = get_wsgi_application()  # sets Django up, so settings can be read below
    # Outside Django's own middleware: a refused request never builds an HttpRequest.
    return WSGIRateLimitMiddleware(
        django_app,
        storage=storage if storage is not None else settings.RATELIMIT_STORAGE,
        default_limits=settings.RATELIMIT_DEFAULT_LIMITS,
        rules=settings.RATELIMIT_RULES,
    )


application = create_application()
