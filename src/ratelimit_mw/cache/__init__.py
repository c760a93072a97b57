"""The response cache: JSON stores and a shared HTTP cache middleware for ASGI and WSGI."""

from __future__ import annotations

from ._asgi import ResponseCacheMiddleware
from ._flow import CacheRule
from ._memory_store import AsyncMemoryCache, MemoryCache
from ._redis_store import AsyncRedisCache, RedisCache
from ._wsgi import WSGIResponseCacheMiddleware

__all__ = [
    "AsyncMemoryCache",
    "AsyncRedisCache",
    "CacheRule",
    "MemoryCache",
    "RedisCache",
    "ResponseCacheMiddleware",
    "WSGIResponseCacheMiddleware",
]
