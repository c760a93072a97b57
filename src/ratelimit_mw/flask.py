"""Flask, the Flask way: ``RateLimit(app)`` or ``init_app(app)``, configured from
``app.config["RATELIMIT_*"]``, the decision in ``flask.g.ratelimit``.

Flask is imported when a request needs it, not with this module: importing
``ratelimit_mw`` (or this module) imports no framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._framework_config import options_from
from ._wsgi import ENVIRON_KEY, WSGIRateLimitMiddleware

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["CONFIG_PREFIX", "RateLimit"]

#: The prefix of the configuration keys: the environment variables' names.
CONFIG_PREFIX = "RATELIMIT_"
_EXTENSION = "ratelimit_mw"


def _config_name(key: str) -> str:
    return CONFIG_PREFIX + key.upper()


class RateLimit:
    """The rate limiter as a Flask extension.

    Example::

        app = Flask(__name__)
        app.config["RATELIMIT_DEFAULT_LIMITS"] = "100/minute"
        app.config["RATELIMIT_STORAGE"] = "redis://localhost:6379/0"
        RateLimit(app)            # or ratelimit = RateLimit(); ratelimit.init_app(app)

        @app.post("/login")
        @limit("5/minute")
        def login(): ...

    The keys are the environment variables' names (``RATELIMIT_STRATEGY``,
    ``RATELIMIT_ENABLED``, ...) plus ``RATELIMIT_RULES`` (`Rule`s or tables as in the
    TOML file), ``RATELIMIT_KEY`` (a key function or a table), ``RATELIMIT_CONFIG`` (a
    TOML file under them) and the middleware's callables (``RATELIMIT_ON_EVENT``, ...).
    Keyword arguments given here win over ``app.config``; *limited_app*, a WSGI app,
    answers refused requests instead of the 429 problem body. The process environment
    is not read behind your back: ``app.config.from_prefixed_env()`` brings it in.

    `ratelimit_mw.limit` and `ratelimit_mw.exempt` work on views and blueprints; the
    decision of a request is in ``flask.g.ratelimit`` (``None`` when exempt). The
    middleware wraps ``app.wsgi_app``, so a refused request never reaches Flask.

    Security: the client is ``REMOTE_ADDR``; behind a proxy apply werkzeug's
    ``ProxyFix`` after `init_app` (so it runs first) or configure trusted proxies in
    ``RATELIMIT_KEY`` (`ratelimit_mw.keys.client_ip`).
    """

    def __init__(self, app: Flask | None = None, *, limited_app: Any = None,
                 **options: Any) -> None:
        self._options = options
        self._limited_app = limited_app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Put the middleware in front of *app*, configured from its ``config``."""
        if _EXTENSION in app.extensions:
            # Twice would count every request twice.
            raise RuntimeError("RateLimit.init_app() was already called for this app")
        data = {key[len(CONFIG_PREFIX):].lower(): value for key, value in app.config.items()
                if key.startswith(CONFIG_PREFIX)}
        data.update(self._options)
        options = options_from(data, "app.config", name_of=_config_name)
        middleware = WSGIRateLimitMiddleware(app.wsgi_app, limited_app=self._limited_app,
                                             **options.kwargs())
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.extensions[_EXTENSION] = middleware
        app.before_request(_expose_decision)

    @staticmethod
    def middleware(app: Flask) -> WSGIRateLimitMiddleware:
        """The middleware `init_app` put in front of *app* (its limiter, its policy)."""
        found: WSGIRateLimitMiddleware = app.extensions[_EXTENSION]
        return found


def _expose_decision() -> None:
    from flask import g, request

    g.ratelimit = request.environ.get(ENVIRON_KEY)
