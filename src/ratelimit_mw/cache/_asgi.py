"""Pure ASGI response cache middleware."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .._flow import arun
from .._types import ASGIApp, Message, Receive, Scope, Send
from . import _flow as flows
from ._http import CacheRequest
from ._memory_store import AsyncMemoryCache
from ._middleware import CacheMiddlewareBase
from ._redis_store import AsyncRedisCache

__all__ = ["ResponseCacheMiddleware"]

#: The cache's logger (`_redis_store` logs on it too): the app's failures that a stale
#: entry answered, and failed background revalidations.
logger = logging.getLogger("ratelimit_mw.cache")


async def _discard(message: Message) -> None:
    """The send of a background revalidation: its client was answered already."""


def _quiet_receive() -> Receive:
    """A receive for a request with no body that never reports a disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # never set: only cancellation ends the wait
        raise AssertionError("unreachable")

    return receive


class ResponseCacheMiddleware(CacheMiddlewareBase[ASGIApp, AsyncRedisCache | AsyncMemoryCache]):
    """A shared HTTP cache (RFC 9111) in front of any ASGI app, stored as JSON.

    Example::

        app = ResponseCacheMiddleware(app, cache=AsyncRedisCache("redis://localhost:6379/0"),
                                      rules=[CacheRule("/articles/{id}", ttl=300)])

    GET responses are stored when the rules of a shared cache allow it: never ``private``,
    ``no-store``, ``Set-Cookie``, ``Vary: *``, 429 or 5xx; requests with
    ``Authorization``/``Cookie`` bypass it unless a rule opts in (then only ``public``
    responses are stored). HEAD is served from the GET entry; a successful POST, PUT,
    PATCH or DELETE drops the URI's entries (and those of the same-origin ``Location``
    and ``Content-Location``) before its answer's last byte goes out. Hits carry ``Age``,
    ``Cache-Status`` and an ``ETag``, and answer a matching ``If-None-Match`` or
    ``If-Modified-Since`` with 304. A stale entry with a validator is revalidated with a
    conditional request (kept *keep_stale* seconds for it); ``stale-while-revalidate``
    and ``stale-if-error`` are honoured. One request per variant fetches or revalidates;
    the others wait for it (bounded). *targeted_field* (e.g. ``"CDN-Cache-Control"``)
    names a field obeyed instead of ``Cache-Control``. *app* is the ASGI app;
    *cache* an `AsyncRedisCache` or `AsyncMemoryCache`, ``None`` meaning an
    `AsyncRedisCache` on ``$REDIS_URL``, else an `AsyncMemoryCache`.

    Order with the rate limiter: put `RateLimitMiddleware` outside (the default
    advice) and every hit still counts against the quota, with current quota headers on
    it; put it inside and hits are free.

    Security: the key holds the validated ``Host`` (pass *allowed_hosts* to refuse
    others) and the forwarding headers apps build URLs from (``X-Forwarded-Host``,
    ``X-Original-Host``, ...; name the ones your app reads besides in
    *extra_key_headers*), so a forged header can only reach an entry of its own.
    """

    def _default_cache(self, url: str | None) -> AsyncRedisCache | AsyncMemoryCache:
        return AsyncRedisCache(url) if url else AsyncMemoryCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _request(scope)
        rule = self.policy.rule_for(_route_path(request.path, scope))
        primary = self.policy.primary_key(request)
        reason = flows.bypass_reason(self.policy, rule, request)
        if reason == "method":
            await self._unsafe(scope, receive, send, request, primary)
            return
        if reason is not None or primary is None:
            await self.app(scope, receive, _Tagged(send, f"fwd=bypass; detail={reason or 'host'}"))
            return
        found = await arun(flows.lookup(self.policy, request, primary, self._connected),
                           self.cache)
        if found.entry is None:
            await self._fetch(scope, receive, send, rule, request, primary, found)
            return
        await _send_entry(send, found.entry.hit(request, time.time(), collapsed=found.collapsed,
                                                status=found.status or None))
        if found.background:
            # The client has its answer: this request revalidates the stale entry now,
            # for the next ones (stale-while-revalidate). Its receive never reports a
            # disconnect, so an app that listens for one runs to the end.
            try:
                await self._fetch(scope, _quiet_receive(), _discard, rule, request, primary,
                                  found)
            except Exception:
                logger.exception("response cache: the app failed to revalidate %s",
                                 request.path)

    async def _fetch(self, scope: Scope, receive: Receive, send: Send,
                     rule: flows.CacheRule | None, request: CacheRequest, primary: str,
                     found: flows.Lookup) -> None:
        """Call the app for a miss or a stale entry (revalidating it when it can), store
        what may be stored, and release the lock *found* holds."""
        stale = found.stale if found.revalidating else None
        if stale is not None:
            # Ask the app whether the stale entry still holds; its 304 is ours, not the
            # client's, so it is held back and answered from the refreshed entry.
            headers = flows.conditional(((k.decode("latin-1"), v.decode("latin-1"))
                                         for k, v in scope.get("headers", ())), stale)
            scope = {**scope, "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                                          for k, v in headers]}
        fallback = None if found.background else flows.stale_if_error(found, time.time())
        recorder = _Recorder(send, found.status, self.policy.max_body_size,
                             hold_304=stale is not None, hold_errors=fallback is not None)
        request_time = time.time()
        try:
            try:
                await self.app(scope, receive, recorder)
            except Exception:
                if fallback is None or recorder.started:
                    raise
                # The app is down, the cache still answers (stale-if-error); the error
                # is logged as the server would have.
                logger.exception("response cache: the app failed; serving %s stale",
                                 request.path)
                await _send_entry(send, fallback.hit(
                    request, time.time(), status="fwd=stale; detail=stale-if-error"))
                return
            if recorder.held and recorder.status == 304 and stale is not None:
                entry, stored = await arun(flows.refresh(
                    self.policy, rule, request, primary, stale, recorder.headers,
                    request_time), self.cache)
                await _send_entry(send, entry.hit(
                    request, time.time(),
                    status="fwd=stale; fwd-status=304" + ("; stored" if stored else "")))
            elif recorder.held and fallback is not None:
                await _send_entry(send, fallback.hit(
                    request, time.time(),
                    status=f"fwd=stale; fwd-status={recorder.status}; detail=stale-if-error"))
            elif recorder.complete and recorder.status is not None:
                await arun(flows.save(self.policy, rule, request, primary, recorder.status,
                                      recorder.headers, bytes(recorder.body), request_time,
                                      found.stale),
                           self.cache)
        finally:
            await arun(flows.release(found), self.cache)

    async def _unsafe(self, scope: Scope, receive: Receive, send: Send,
                      request: CacheRequest, primary: str | None) -> None:
        async def invalidate(status: int | None, headers: list[tuple[str, str]]) -> None:
            await arun(flows.after_unsafe(request, status, headers, primary), self.cache)

        recorder = _Invalidating(send, invalidate)
        await self.app(scope, receive, recorder)
        if not recorder.invalidated:  # the app never sent its last byte
            await invalidate(recorder.status, recorder.headers)

    async def invalidate(self, host: str, path: str, scheme: str = "http") -> int:
        """Drop every entry stored for *path* on *host* (all queries and variants)."""
        return await arun(flows.invalidate_path(host, path, scheme), self.cache)

    async def invalidate_prefix(self, host: str, path_prefix: str, scheme: str = "http",
                                ) -> int:
        """Drop every entry whose path starts with *path_prefix* (SCAN, never KEYS)."""
        return await arun(flows.invalidate_prefix(host, path_prefix, scheme), self.cache)


def _request(scope: Scope) -> CacheRequest:
    headers = flows.header_dict((k.decode("latin-1"), v.decode("latin-1"))
                                for k, v in scope.get("headers", ()))
    raw = scope.get("raw_path")
    # The key holds the whole path the client asked for, root_path included: two apps
    # mounted at /v1 and /v2 on one store keep their own /items.
    path = raw.decode("latin-1") if raw else scope.get("path", "/")
    return CacheRequest(scope.get("method", "GET"), scope.get("scheme", "http"),
                        headers.get("host"), path.split("?", 1)[0],
                        scope.get("query_string", b"").decode("latin-1"), headers)


def _route_path(path: str, scope: Scope) -> str:
    """The path the app routes (without root_path): what CacheRule templates match."""
    root = scope.get("root_path") or ""
    if root and path.startswith(root) and path[len(root):len(root) + 1] in ("", "/"):
        return path[len(root):] or "/"
    return path


async def _send_entry(send: Send, response: tuple[int, list[tuple[str, str]], bytes]) -> None:
    status, headers, body = response
    await send({"type": "http.response.start", "status": status,
                "headers": [(n.lower().encode("latin-1"), v.encode("latin-1"))
                            for n, v in headers]})
    await send({"type": "http.response.body", "body": body})


class _Tagged:
    """Adds ``Cache-Status`` (with the app's status as ``fwd-status``) to the response
    start; forwards everything else."""

    __slots__ = ("_done", "_send", "_value")

    def __init__(self, send: Send, tag: str) -> None:
        self._send = send
        self._value = f"ratelimit-mw; {tag}"
        self._done = False

    async def __call__(self, message: Message) -> None:
        if not self._done and message["type"] == "http.response.start":
            self._done = True
            value = f"{self._value}; fwd-status={message['status']}".encode("latin-1")
            message = {**message, "headers": [*message.get("headers", ()),
                                              (b"cache-status", value)]}
        await self._send(message)


class _Recorder(_Tagged):
    """`_Tagged`, noting status and headers and keeping a copy of the body up to *limit*
    bytes as it streams. Held back, body and all (``held``): with *hold_304*, a 304 (the
    answer to the cache's own conditional request); with *hold_errors*, a 500, 502, 503
    or 504 (a stale entry is served instead)."""

    __slots__ = ("_hold_304", "_hold_errors", "_limit", "body", "complete", "headers",
                 "held", "started", "status")

    def __init__(self, send: Send, tag: str, limit: int, *, hold_304: bool = False,
                 hold_errors: bool = False) -> None:
        super().__init__(send, tag)
        self._limit = limit
        self._hold_304 = hold_304
        self._hold_errors = hold_errors
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.complete = False
        self.held = False
        self.started = False  # the response start went out: the app's answer is the one

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if self.held:
            return
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = [(k.decode("latin-1"), v.decode("latin-1"))
                            for k, v in message.get("headers", ())]
            if (self._hold_304 and self.status == 304) or (
                    self._hold_errors and self.status in flows.ERROR_STATUSES):
                self.held = True
                return
            self.started = True
            if message.get("trailers"):
                self._limit = -1  # trailers cannot be replayed from the cache
        elif kind == "http.response.body" and self._limit >= 0:
            body = message.get("body", b"")
            if len(self.body) + len(body) > self._limit:
                self._limit = -1  # too large: passes through, never stored
                self.body = bytearray()
            else:
                self.body += body
                if not message.get("more_body", False):
                    self.complete = True
        elif kind == "http.response.pathsend":
            self._limit = -1  # a file sent by path: not buffered, not stored
        await super().__call__(message)


class _Invalidating(_Tagged):
    """`_Tagged` for an unsafe request: runs *invalidate* (given the status) before the
    message that completes the response goes out, so a client that sends a GET the moment
    it has the answer can never be served the entry from before the change."""

    __slots__ = ("_invalidate", "headers", "invalidated", "status")

    def __init__(self, send: Send,
                 invalidate: Callable[[int | None, list[tuple[str, str]]], Awaitable[None]],
                 ) -> None:
        super().__init__(send, "fwd=method")
        self._invalidate = invalidate
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.invalidated = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = [(k.decode("latin-1"), v.decode("latin-1"))
                            for k, v in message.get("headers", ())]
        elif not self.invalidated and (
                (kind == "http.response.body" and not message.get("more_body", False))
                or kind == "http.response.pathsend"):
            self.invalidated = True
            await self._invalidate(self.status, self.headers)
        await super().__call__(message)
