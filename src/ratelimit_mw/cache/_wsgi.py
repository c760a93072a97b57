"""Pure WSGI response cache middleware."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus

from .._flow import run
from .._types import Environ, OptExcInfo, StartResponse, WriteCallable, WSGIApp
from ._flow import (
    CachePolicy,
    CacheRule,
    bypass_reason,
    header_dict,
    invalidate,
    invalidates,
    lookup,
    response_ttl,
    store,
)
from ._http import CacheRequest
from ._store import MemoryCache, RedisCache

__all__ = ["WSGIResponseCacheMiddleware"]


class WSGIResponseCacheMiddleware:
    """The shared HTTP cache of `ResponseCacheMiddleware`, for WSGI apps.

    Example::

        flask_app.wsgi_app = WSGIResponseCacheMiddleware(
            flask_app.wsgi_app, cache=RedisCache("redis://localhost:6379/0"),
            rules=[CacheRule("/articles/{id}", ttl=300)])

    The same rules, keys and headers as the ASGI middleware. The app's iterable is passed
    through as it streams (``close()`` kept); a copy up to *max_body_size* is stored once
    the server has sent it all. *cache* ``None``: `RedisCache` on ``$REDIS_URL``,
    else `MemoryCache`.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        cache: RedisCache | MemoryCache | None = None,
        rules: Iterable[CacheRule] = (),
        default_ttl: int = 0,
        allowed_hosts: Iterable[str] | None = None,
        max_body_size: int = 1 << 20,
        lock_wait: float = 5.0,
    ) -> None:
        self.app = app
        self.policy = CachePolicy.build(rules, default_ttl, allowed_hosts, max_body_size,
                                        lock_wait)
        if cache is None:
            url = os.environ.get("REDIS_URL")
            cache = RedisCache(url) if url else MemoryCache()
        self.cache = cache

    def _connected(self) -> bool:
        return self.cache.connected

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = _request(environ)
        rule = self.policy.rule_for(environ.get("PATH_INFO") or "/")
        primary = request.primary_key("", self.policy.allowed_hosts)
        reason = bypass_reason(self.policy, rule, request)
        if reason == "method":
            recorder = _Recorder(start_response, "fwd=method")
            result = self.app(environ, recorder)

            def after_unsafe(_capture: _Capture) -> None:
                if primary is not None and invalidates(request.method, recorder.status):
                    run(invalidate(primary), self.cache)

            return _Capture(result, recorder, 0, after_unsafe)
        if reason is not None or primary is None:
            tagged = _Recorder(start_response, f"fwd=bypass; detail={reason or 'host'}")
            return self.app(environ, tagged)
        found = run(lookup(self.policy, request, primary, self._connected), self.cache)
        if found.entry is not None:
            status, headers, body = found.entry.hit(request, time.time(),
                                                    collapsed=found.collapsed)
            start_response(f"{status} {HTTPStatus(status).phrase}", headers)
            return [body]
        recorder = _Recorder(start_response, found.status)

        def after(capture: _Capture) -> None:
            try:
                status_code = recorder.status
                if request.method == "GET" and capture.complete and status_code is not None \
                        and not recorder.wrote:
                    ttl, _ = response_ttl(self.policy, rule, request, status_code,
                                          recorder.headers)
                    if ttl > 0:
                        run(store(request, primary, status_code, recorder.headers,
                                  bytes(capture.body), ttl), self.cache)
            finally:
                if found.lock is not None and found.token is not None:
                    self.cache.unlock(found.lock, found.token)

        try:
            result = self.app(environ, recorder)
        except BaseException:
            if found.lock is not None and found.token is not None:
                self.cache.unlock(found.lock, found.token)
            raise
        return _Capture(result, recorder, self.policy.max_body_size, after)

    def invalidate(self, host: str, path: str, scheme: str = "http") -> int:
        """Drop every entry stored for *path* on *host* (all queries and variants)."""
        primary = CacheRequest("GET", scheme, host, path, "", {}).primary_key("", None)
        if primary is None:
            return 0
        return int(self.cache.invalidate_tag(primary.split("#", 1)[0] + "#tag"))

    def invalidate_prefix(self, host: str, path_prefix: str, scheme: str = "http") -> int:
        """Drop every entry whose path starts with *path_prefix* (SCAN, never KEYS)."""
        primary = CacheRequest("GET", scheme, host, path_prefix, "", {}).primary_key("", None)
        if primary is None:
            return 0
        return int(self.cache.delete_prefix(primary.split("#", 1)[0]))


def _request(environ: Environ) -> CacheRequest:
    pairs = [(key[5:].replace("_", "-"), value) for key, value in environ.items()
             if key.startswith("HTTP_")]
    headers = header_dict(pairs)
    # The key holds the whole path (SCRIPT_NAME too): two apps mounted under different
    # prefixes on one store used to share each other's entries.
    path = (environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "/")
    return CacheRequest(environ.get("REQUEST_METHOD", "GET").upper(),
                        environ.get("wsgi.url_scheme", "http"),
                        headers.get("host") or environ.get("SERVER_NAME"), path,
                        environ.get("QUERY_STRING", ""), headers)


class _Recorder:
    """``start_response`` that notes status and headers (and adds ``Cache-Status``)."""

    __slots__ = ("_start_response", "_tag", "headers", "status", "wrote")

    def __init__(self, start_response: StartResponse, tag: str | None) -> None:
        self._start_response = start_response
        self._tag = tag
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        #: The app used the legacy write() callable: bytes we never saw went out, so the
        #: copy is incomplete and must not be stored (it used to be: a truncated body).
        self.wrote = False

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: OptExcInfo | None = None, /) -> WriteCallable:
        self.status = int(status.split(" ", 1)[0])
        self.headers = list(headers)
        if self._tag is not None:
            headers = [*headers, ("Cache-Status", f"ratelimit-mw; {self._tag}")]
        if exc_info is None:
            write = self._start_response(status, headers)
        else:
            write = self._start_response(status, headers, exc_info)

        def tracked_write(data: bytes) -> object:
            self.wrote = True
            return write(data)

        return tracked_write


class _Capture:
    """The app's iterable, passed through; a bounded copy kept; *after* run at close()."""

    def __init__(self, result: Iterable[bytes], recorder: _Recorder, limit: int,
                 after: Callable[[_Capture], None]) -> None:
        self._result = result
        self._limit = limit
        self._after = after
        self.body = bytearray()
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._result:
            if self._limit >= 0:
                if len(self.body) + len(chunk) > self._limit:
                    self._limit = -1  # too large: passes through, never stored
                    self.body = bytearray()
                else:
                    self.body += chunk
            yield chunk
        self.complete = self._limit >= 0

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._after(self)
