"""Settings of the demo project: no database, no apps, only what serving views needs.

The rate-limit options live here, next to the rest of the configuration, and both
entry points (wsgi.py and asgi.py) read them.
"""

from __future__ import annotations

import os

from ratelimit_mw import Rule

# A demo key; a real project reads its own from the environment or a secrets store.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "ratelimit-mw-demo-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"  # what `manage.py runserver` serves
USE_TZ = True

# None: $REDIS_URL if set, else in-process memory (fine for one process, wrong for many).
RATELIMIT_STORAGE: str | None = None
RATELIMIT_DEFAULT_LIMITS = "60/minute"
# POST /login is limited on its view (views.py): the middleware reads the URLconf.
RATELIMIT_RULES = [
    # /items/1 and /items/2 share this counter: ids are not a way around the limit.
    Rule("/items/{id}", "10/minute"),
    Rule("/health", exempt=True),
]
