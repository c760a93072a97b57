"""Rate limiting, quota headers and a response cache in front of any ASGI or WSGI app.

Example::

    from ratelimit_mw import RateLimitMiddleware, Rule, keys

    app = RateLimitMiddleware(app, default_limits="100/minute",
                              rules=[Rule("/login", "5/minute", methods=["POST"])])
"""

from __future__ import annotations

from . import keys
from ._asgi import RateLimitMiddleware
from ._breaker import CircuitBreaker
from ._core import Decision, Plan, PlanItem, Policy, Quota
from ._options import MiddlewareOptions
from ._request import RequestInfo
from ._response import ResponseInfo
from ._routes import exempt, limit
from ._rules import Limit, Rule
from ._storage.limiter import AsyncRateLimiter, RateLimiter
from ._storage.redis import RedisOptions
from ._wsgi import WSGIRateLimitMiddleware
from .cache import (
    AsyncMemoryCache,
    AsyncRedisCache,
    CacheRule,
    MemoryCache,
    RedisCache,
    ResponseCacheMiddleware,
    WSGIResponseCacheMiddleware,
)
from .errors import ConfigurationError, RateLimitMWError, StorageError, StorageUnavailableError

__version__ = "0.1.0"

__all__ = [
    "AsyncMemoryCache",
    "AsyncRateLimiter",
    "AsyncRedisCache",
    "CacheRule",
    "CircuitBreaker",
    "ConfigurationError",
    "Decision",
    "Limit",
    "MemoryCache",
    "MiddlewareOptions",
    "Plan",
    "PlanItem",
    "Policy",
    "Quota",
    "RateLimitMWError",
    "RateLimitMiddleware",
    "RateLimiter",
    "RedisCache",
    "RedisOptions",
    "RequestInfo",
    "ResponseCacheMiddleware",
    "ResponseInfo",
    "Rule",
    "StorageError",
    "StorageUnavailableError",
    "WSGIRateLimitMiddleware",
    "WSGIResponseCacheMiddleware",
    "exempt",
    "keys",
    "limit",
]
