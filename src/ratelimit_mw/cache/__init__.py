"""The response cache: JSON stores and a shared HTTP cache middleware for ASGI and WSGI."""

from __future__ import annotations

from .asgi import ResponseCacheMiddleware
from .flow import CacheRule
from .store import AsyncMemoryCache, AsyncRedisCache, MemoryCache, RedisCache
from .wsgi import WSGIResponseCacheMiddleware

__all__ = [
    "AsyncMemoryCache",
    "AsyncRedisCache",
    "CacheRule",
    "MemoryCache",
    "RedisCache",
    "ResponseCacheMiddleware",
    "WSGIResponseCacheMiddleware",
]
