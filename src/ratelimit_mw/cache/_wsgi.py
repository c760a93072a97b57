"""Pure WSGI response cache middleware."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

from .._flow import run
from .._types import Environ, OptExcInfo, StartResponse, WriteCallable, WSGIApp
from . import _flow as flows
from ._http import CacheRequest
from ._memory_store import MemoryCache
from ._middleware import CacheMiddlewareBase
from ._redis_store import RedisCache

__all__ = ["WSGIResponseCacheMiddleware"]

#: The cache's logger: the app's failures that a stale entry answered, and failed
#: background revalidations.
logger = logging.getLogger("ratelimit_mw.cache")


def _discard(status: str, headers: list[tuple[str, str]],
             exc_info: OptExcInfo | None = None, /) -> WriteCallable:
    """The start_response of a background revalidation: its client was answered already."""
    return lambda data: None


class WSGIResponseCacheMiddleware(CacheMiddlewareBase[WSGIApp, RedisCache | MemoryCache]):
    """The shared HTTP cache of `ResponseCacheMiddleware`, for WSGI apps.

    Example::

        flask_app.wsgi_app = WSGIResponseCacheMiddleware(
            flask_app.wsgi_app, cache=RedisCache("redis://localhost:6379/0"),
            rules=[CacheRule("/articles/{id}", ttl=300)])

    The same rules, keys, headers, revalidation and stale content as the ASGI middleware.
    The app's iterable is passed through as it streams (``close()`` kept); a copy up to
    *max_body_size* is stored once the server has sent it all. *app* is the WSGI app;
    *cache* a `RedisCache` or `MemoryCache`, ``None`` meaning a `RedisCache` on
    ``$REDIS_URL``, else a `MemoryCache`.
    """

    def _default_cache(self, url: str | None) -> RedisCache | MemoryCache:
        return RedisCache(url) if url else MemoryCache()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = _request(environ)
        rule = self.policy.rule_for(environ.get("PATH_INFO") or "/")
        primary = self.policy.primary_key(request)
        reason = flows.bypass_reason(self.policy, rule, request)
        if reason == "method":
            recorder = _Recorder(start_response, "fwd=method")
            result = self.app(environ, recorder)

            def after_unsafe(_capture: _Capture) -> None:
                run(flows.after_unsafe(request, recorder.status, recorder.headers, primary,
                                       _environ_path), self.cache)

            # Before the last chunk is released: once the client has the whole answer it
            # may send its GET, which must not find the entry from before the change.
            return _Capture(result, 0, after_unsafe, before_end=True)
        if reason is not None or primary is None:
            tagged = _Recorder(start_response, f"fwd=bypass; detail={reason or 'host'}")
            return self.app(environ, tagged)
        found = run(flows.lookup(self.policy, request, primary, self._connected), self.cache)
        if found.entry is None:
            return self._fetch(environ, start_response, rule, request, primary, found)
        served = _serve(start_response, found.entry.hit(
            request, time.time(), collapsed=found.collapsed, status=found.status or None))
        if not found.background:
            return served

        def revalidate() -> None:
            # The server has sent the answer: this request revalidates the stale entry
            # now, for the next ones (stale-while-revalidate).
            try:
                result = self._fetch(dict(environ), _discard, rule, request, primary, found)
                try:
                    for _ in result:
                        pass
                finally:
                    _close(result)
            except Exception:
                logger.exception("response cache: the app failed to revalidate %s",
                                 request.path)

        return _Capture(served, 0, lambda _capture: revalidate())

    def _fetch(self, environ: Environ, start_response: StartResponse,
               rule: flows.CacheRule | None, request: CacheRequest, primary: str,
               found: flows.Lookup) -> Iterable[bytes]:
        """Call the app for a miss or a stale entry (revalidating it when it can); what
        may be stored is stored, and the lock *found* holds released, once the server has
        the whole body (or at once when the cache answers)."""
        stale = found.stale if found.revalidating else None
        if stale is not None:
            # Ask the app whether the stale entry still holds; its 304 is ours, not the
            # client's, so it is held back and answered from the refreshed entry.
            environ = {key: value for key, value in environ.items()
                       if key not in ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")}
            for name, value in stale.validators():
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        fallback = None if found.background else flows.stale_if_error(found, time.time())
        recorder = _Recorder(start_response, found.status, hold_304=stale is not None,
                             hold_errors=fallback is not None)
        request_time = time.time()

        def after(capture: _Capture) -> None:
            try:
                if capture.complete and recorder.status is not None and not recorder.wrote:
                    run(flows.save(self.policy, rule, request, primary, recorder.status,
                                   recorder.headers, bytes(capture.body), request_time,
                                   found.stale),
                        self.cache)
            finally:
                run(flows.release(found), self.cache)

        try:
            try:
                result = self.app(environ, recorder)
                if recorder.may_hold:
                    result = _started(result, recorder)
            except Exception:
                if fallback is None or recorder.started:
                    raise
                # The app is down, the cache still answers (stale-if-error); the error is
                # logged as the server would have.
                logger.exception("response cache: the app failed; serving %s stale",
                                 request.path)
                run(flows.release(found), self.cache)
                return _serve(start_response, fallback.hit(
                    request, time.time(), status="fwd=stale; detail=stale-if-error"))
            if recorder.held and recorder.status == 304 and stale is not None:
                _close(result)
                entry, stored = run(flows.refresh(
                    self.policy, rule, request, primary, stale, recorder.headers,
                    request_time), self.cache)
                run(flows.release(found), self.cache)
                return _serve(start_response, entry.hit(
                    request, time.time(),
                    status="fwd=stale; fwd-status=304" + ("; stored" if stored else "")))
            if recorder.held and fallback is not None:
                _close(result)
                run(flows.release(found), self.cache)
                return _serve(start_response, fallback.hit(
                    request, time.time(),
                    status=f"fwd=stale; fwd-status={recorder.status}; detail=stale-if-error"))
        except BaseException:
            run(flows.release(found), self.cache)
            raise
        return _Capture(result, self.policy.max_body_size, after)

    def invalidate(self, host: str, path: str, scheme: str = "http") -> int:
        """Drop every entry stored for *path* on *host* (all queries and variants)."""
        return run(flows.invalidate_path(host, path, scheme), self.cache)

    def invalidate_prefix(self, host: str, path_prefix: str, scheme: str = "http") -> int:
        """Drop every entry whose path starts with *path_prefix* (SCAN, never KEYS)."""
        return run(flows.invalidate_prefix(host, path_prefix, scheme), self.cache)


def _environ_path(path: str) -> str:
    """A URL's path as PEP 3333 puts it in the environ: percent-decoded, as latin-1."""
    return unquote_to_bytes(path).decode("latin-1")


def _request(environ: Environ) -> CacheRequest:
    pairs = [(key[5:].replace("_", "-"), value) for key, value in environ.items()
             if key.startswith("HTTP_")]
    headers = flows.header_dict(pairs)
    # The key holds the whole path, SCRIPT_NAME included: two apps mounted under
    # different prefixes on one store keep their own entries.
    path = (environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "/")
    return CacheRequest(environ.get("REQUEST_METHOD", "GET"),
                        environ.get("wsgi.url_scheme", "http"),
                        headers.get("host") or environ.get("SERVER_NAME"), path,
                        environ.get("QUERY_STRING", ""), headers)


def _serve(start_response: StartResponse,
           response: tuple[int, list[tuple[str, str]], bytes]) -> list[bytes]:
    status, headers, body = response
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return [body]


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _started(result: Iterable[bytes], recorder: _Recorder) -> Iterable[bytes]:
    """*result*, its first chunk already drawn if the app had not called
    ``start_response`` yet (a generator app): the status decides what we send."""
    if recorder.status is not None:
        return result
    iterator = iter(result)
    first = next(iterator, None)
    return _Resumed([] if first is None else [first], iterator, result)


class _Resumed:
    """The chunks drawn ahead, then the rest of the app's iterable; its ``close()`` kept."""

    def __init__(self, drawn: list[bytes], rest: Iterator[bytes],
                 result: Iterable[bytes]) -> None:
        self._drawn = drawn
        self._rest = rest
        self._result = result

    def __iter__(self) -> Iterator[bytes]:
        yield from self._drawn
        yield from self._rest

    def close(self) -> None:
        _close(self._result)


class _Recorder:
    """``start_response`` that notes status and headers (and adds ``Cache-Status``). Not
    passed on (``held``): with *hold_304*, a 304 (the answer to the cache's own
    conditional request); with *hold_errors*, a 500, 502, 503 or 504 (a stale entry is
    served instead)."""

    __slots__ = ("_hold_304", "_hold_errors", "_start_response", "_tag", "headers", "held",
                 "started", "status", "wrote")

    def __init__(self, start_response: StartResponse, tag: str, *,
                 hold_304: bool = False, hold_errors: bool = False) -> None:
        self._start_response = start_response
        self._tag = tag
        self._hold_304 = hold_304
        self._hold_errors = hold_errors
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.held = False
        self.started = False  # passed on to the server: the app's answer is the one
        #: The app used the legacy write() callable: bytes we never saw went out, so the
        #: copy is incomplete and is never stored.
        self.wrote = False

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: OptExcInfo | None = None, /) -> WriteCallable:
        self.status = int(status.split(" ", 1)[0])
        self.headers = list(headers)
        if (self._hold_304 and self.status == 304) or (
                self._hold_errors and self.status in flows.ERROR_STATUSES):
            self.held = True
            return lambda data: None  # its body is not sent
        self.held = False  # start_response again, with exc_info: this one goes out
        self.started = True
        headers = [*headers, ("Cache-Status",
                              f"ratelimit-mw; {self._tag}; fwd-status={self.status}")]
        if exc_info is None:
            write = self._start_response(status, headers)
        else:
            write = self._start_response(status, headers, exc_info)

        def tracked_write(data: bytes) -> object:
            self.wrote = True
            return write(data)

        return tracked_write

    @property
    def may_hold(self) -> bool:
        return self._hold_304 or self._hold_errors


class _Capture:
    """The app's iterable, passed through; a bounded copy kept; *after* run once, at
    close(), or (``before_end=True``) before the last chunk is released to the server,
    which holds that chunk back until the app's iterable is exhausted."""

    def __init__(self, result: Iterable[bytes], limit: int,
                 after: Callable[[_Capture], None], *, before_end: bool = False) -> None:
        self._result = result
        self._limit = limit
        self._after = after
        self._before_end = before_end
        self._done = False
        self.body = bytearray()
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        held: bytes | None = None
        for chunk in self._result:
            if self._limit >= 0:
                if len(self.body) + len(chunk) > self._limit:
                    self._limit = -1  # too large: passes through, never stored
                    self.body = bytearray()
                else:
                    self.body += chunk
            if not self._before_end:
                yield chunk
                continue
            if held is not None:
                yield held
            held = chunk
        self.complete = self._limit >= 0
        if self._before_end:
            self._run_after()
            if held is not None:
                yield held

    def _run_after(self) -> None:
        if not self._done:
            self._done = True
            self._after(self)

    def close(self) -> None:
        try:
            _close(self._result)
        finally:
            self._run_after()
