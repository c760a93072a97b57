"""ASGI entry point: Django's application inside the rate-limit middleware.

``uvicorn demo_site.asgi:application --lifespan off`` (run from examples/django): Django
does not speak the lifespan protocol.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from ratelimit_mw import RateLimitMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")


def create_application(storage: str | None = None) -> RateLimitMiddleware:
    """A fresh middleware (fresh counters) around Django; *storage* overrides the setting."""
    django_app = get_asgi_application()  # sets Django up, so settings can be read below
    # Outside Django's own middleware: a refused request never reaches a thread or a view.
    return RateLimitMiddleware(
        django_app,
        storage=storage if storage is not None else settings.RATELIMIT_STORAGE,
        default_limits=settings.RATELIMIT_DEFAULT_LIMITS,
        rules=settings.RATELIMIT_RULES,
    )


application = create_application()
