"""A minimal Django project behind ratelimit-mw (see settings.py, wsgi.py and asgi.py)."""
