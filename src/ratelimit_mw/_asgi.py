"""Pure ASGI rate-limit middleware."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from limits import RateLimitItem

from ._core import Decision, Plan
from ._headers import PROBLEM_JSON, problem_body, unavailable_body
from ._middleware import MiddlewareBase
from ._options import MiddlewareKwargs
from ._request import RequestInfo
from ._response import ResponseInfo, settle_deltas
from ._storage.limiter import AsyncRateLimiter
from ._types import ASGIApp, Message, Receive, Scope, Send
from .errors import ConfigurationError, StorageError

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["RateLimitMiddleware"]

_WEBSOCKETS = ("limit", "pass")


async def _send_problem(send: Send, status: int, body: bytes,
                        headers: list[tuple[bytes, bytes]]) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})



async def _too_many_requests(scope: Scope, receive: Receive, send: Send) -> None:
    """The default 429: RFC 9457 problem details naming the violated policies."""
    decision: Decision = scope["state"]["ratelimit"]
    await _send_problem(send, 429, problem_body(decision), [])


class RateLimitMiddleware(MiddlewareBase[AsyncRateLimiter, ASGIApp]):
    """Rate limiting and quota headers in front of any ASGI application.

    Example::

        app = RateLimitMiddleware(
            app,
            storage="redis://localhost:6379/0",    # None: $REDIS_URL, else memory://
            default_limits="100/minute",
            key=keys.client_ip(trusted_proxies=["10.0.0.0/8"]),
            rules=[Rule("/login", "5/minute", methods=["POST"]),
                   Rule("/health", exempt=True)],
        )

    Allowed requests reach *app* with the quota headers added to its response; refused
    ones get a 429 ``application/problem+json`` body (or *limited_app*, an ASGI app of
    yours, which finds the decision in ``scope["state"]["ratelimit"]``). Websocket
    handshakes are limited too (``websockets="limit"``): a refused one is denied with a
    429 where the server supports the ``websocket.http.response`` extension, else
    closed with code 1008 (1013 when the storage failed and the policy is ``deny``).
    A rule's ``messages=`` limits what the client sends on each connection (counted in
    process, with ``websockets="limit"`` or ``"pass"``): over it, the connection is
    closed with code 1008 and the app's ``receive()`` sees a disconnect.
    ``enabled=False`` passes every request through untouched and builds no limiter;
    ``exempt_when`` lets the requests it returns ``True`` for through the same way.
    Lifespan passes through; at its shutdown the middleware closes a limiter it built
    (not one passed as *limiter*). Other scope types pass through untouched.

    Security: the client is the socket peer unless you configure trusted proxies in
    `ratelimit_mw.keys.client_ip`; paths are normalised before rules match.
    """

    _limiter_class = AsyncRateLimiter
    _protocol = "ASGI"
    _too_many_requests = staticmethod(_too_many_requests)

    def __init__(
        self,
        app: ASGIApp,
        *,
        limited_app: ASGIApp | None = None,
        websockets: Literal["limit", "pass"] = "limit",
        **options: Unpack[MiddlewareKwargs],
    ) -> None:
        super().__init__(app, limited_app=limited_app, **options)
        if websockets not in _WEBSOCKETS:
            raise ConfigurationError(f"websockets={websockets!r}: use 'limit' or 'pass'")
        # Disabled: no scope type is limited, so every request takes the pass-through
        # branch that lifespan takes, and the enabled path pays nothing for the switch.
        # Websockets take that branch too, to their own method: the http path pays
        # nothing for message limits.
        self._kinds = ("http",) if self.enabled else ()
        self._websockets = self.enabled
        self._handshakes = websockets == "limit"
        # A limiter we built is ours to close at lifespan shutdown; one passed in is not.
        self._owns_limiter = self.enabled and self.options.limiter is None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._routes is not None:
            self._load_routes(scope.get("app"), scope.get("litestar_app"))
        kind = scope["type"]
        if kind not in self._kinds:
            if kind == "websocket" and self._websockets:
                await self._websocket(scope, receive, send)
                return
            if kind == "lifespan" and self._owns_limiter:
                send = _CloseOnShutdown(send, self._checker)
            await self.app(scope, receive, send)
            return
        plan = self.policy.plan(RequestInfo.from_scope(scope))
        if plan is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter() if self._on_event is not None else 0.0
        error: StorageError | None = None
        decision = self._checker.check_nowait(plan)
        if decision is None:
            decision, error = await self._adecide(plan)
        through, headers = self._decided(scope, plan, decision, started, error)
        if decision.lease:
            await self._leased(scope, receive, send, decision, headers, through)
        elif through and plan.settle is not None and decision.allowed and (
                not decision.storage_error):
            await self._settling(scope, receive, send, decision, headers)
        elif through:
            await self.app(scope, receive, _HeaderSend(send, headers) if headers else send)
        elif decision.storage_error and not decision.quotas:  # on_storage_error="deny"
            await _send_problem(send, 503, unavailable_body(), [(b"retry-after", b"1")])
        else:
            await self.limited_app(scope, receive, _HeaderSend(send, headers))

    async def _settling(self, scope: Scope, receive: Receive, send: Send,
                        decision: Decision, headers: list[tuple[bytes, bytes]]) -> None:
        """Run the app and settle the reservation when its response starts.

        The settle runs beside the body (the response is never held for it) and is
        awaited before this request's call returns, so it has landed when the server
        takes the connection's next request.
        """
        settler = _Settler(self._checker, decision)
        try:
            await self.app(scope, receive, _HeaderSend(send, headers, on_start=settler.start))
        finally:
            await settler.finish()

    async def _leased(self, scope: Scope, receive: Receive, send: Send, decision: Decision,
                      headers: list[tuple[bytes, bytes]], through: bool) -> None:
        """A request holding a concurrency lease: released after the response's last body
        message, when the client disconnects, or when the app raises, whichever is first.
        """
        lease = _Lease(self, decision, send, receive)
        try:
            if not through:  # refused after a cluster slot took the lease: give it back
                await lease.release()
                await self.limited_app(scope, receive, _HeaderSend(send, headers))
                return
            settler = _Settler(self._checker, decision) if (
                decision.plan.settle is not None and not decision.storage_error) else None
            await self.app(scope, lease.receive, _HeaderSend(
                lease.send, headers, on_start=None if settler is None else settler.start))
            if settler is not None:
                await settler.finish()
        finally:
            await lease.release()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket connection: its messages limited (``Rule(messages=)``), then its
        handshake checked like a request (``websockets="limit"``)."""
        request = RequestInfo.from_scope(scope)
        rates = self.policy.messages(request)
        if rates:
            limited = _MessageLimit(receive, send, rates)
            receive, send = limited.receive, limited.send
        plan = self.policy.plan(request) if self._handshakes else None
        if plan is None:
            await self.app(scope, receive, send)
            return
        # The check as __call__ makes it for http: kept inline there, where a request
        # decided in memory must not cost a coroutine of its own.
        started = time.perf_counter() if self._on_event is not None else 0.0
        error: StorageError | None = None
        decision = self._checker.check_nowait(plan)
        if decision is None:
            decision, error = await self._adecide(plan)
        through, headers = self._decided(scope, plan, decision, started, error)
        if not decision.lease:
            await self._handshake(scope, receive, send, decision, headers, through)
            return
        # A rule's concurrency= counts open connections: the slot is held until the
        # app's handler returns (the connection is over).
        try:
            await self._handshake(scope, receive, send, decision, headers, through)
        finally:
            await self.arelease(decision)

    def _decided(self, scope: Scope, plan: Plan, decision: Decision, started: float,
                 error: StorageError | None) -> tuple[bool, list[tuple[bytes, bytes]]]:
        """Report *decision*, leave it in the scope's state, render its headers: whether
        the request goes through, and the headers (http requests and handshakes)."""
        through = decision.allowed if self._on_event is None and decision.allowed else (
            self._report(plan, decision, started, error))
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        state["ratelimit"] = decision
        return through, self.renderer.render_asgi(decision,
                                                  shadow=through and not decision.allowed)

    async def _handshake(self, scope: Scope, receive: Receive, send: Send,
                         decision: Decision, headers: list[tuple[bytes, bytes]],
                         through: bool) -> None:
        if through:
            await self.app(scope, receive,
                           _HeaderSend(send, headers, "websocket.accept") if headers else send)
            return
        message = await receive()  # websocket.connect: the handshake we answer
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" in scope.get("extensions", {}):
            status, body = (503, unavailable_body()) if not decision.quotas else (
                429, problem_body(decision))
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": [(b"content-type", PROBLEM_JSON.encode()),
                                    (b"content-length", str(len(body)).encode()), *headers]})
            await send({"type": "websocket.http.response.body", "body": body})
        elif not decision.quotas:
            # 1013 "Try Again Later": the limiter could not decide, the client did no wrong.
            await send({"type": "websocket.close", "code": 1013,
                        "reason": "rate limit storage unavailable"})
        else:
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "rate limit exceeded"})


#: The close a connection over its message limit gets: 1008, policy violation.
_MESSAGES_CLOSE: Message = {"type": "websocket.close", "code": 1008,
                            "reason": "message rate limit exceeded"}


class _MessageLimit:
    """One websocket connection's message limits, counted in process.

    Each rate keeps the times of the last *amount* messages it let through (a moving
    window: exactly *amount* per period, never a burst at a window's edge). A message
    that would exceed a rate is not delivered: the connection is closed with 1008, the
    app's ``receive()`` answers ``websocket.disconnect`` from then on, and what the app
    sends after the close is dropped, so the server never sees a send after a close.
    """

    __slots__ = ("_app_closed", "_closed", "_receive", "_send", "_windows")

    def __init__(self, receive: Receive, send: Send, rates: Sequence[RateLimitItem]) -> None:
        self._receive = receive
        self._send = send
        self._windows = tuple((float(rate.get_expiry()), deque[float](maxlen=rate.amount))
                              for rate in rates)
        self._closed = False  # closed by us: over the limit
        self._app_closed = False  # closed by the app: the server's to answer from then on

    def _allow(self) -> bool:
        now = time.monotonic()
        for period, window in self._windows:
            if len(window) == window.maxlen and now - window[0] < period:
                return False
        for _, window in self._windows:  # all-or-nothing, as a request's limits are
            window.append(now)
        return True

    async def receive(self) -> Message:
        if self._closed:
            return {"type": "websocket.disconnect", "code": 1008}
        message = await self._receive()
        if (message["type"] == "websocket.receive" and not self._app_closed
                and not self._allow()):
            self._closed = True
            await self._send(_MESSAGES_CLOSE)
            return {"type": "websocket.disconnect", "code": 1008}
        return message

    async def send(self, message: Message) -> None:
        if self._closed:
            return
        if message["type"] == "websocket.close":
            self._app_closed = True
        await self._send(message)


class _CloseOnShutdown:
    """Closes the limiter's connections when the app reports its shutdown complete."""

    __slots__ = ("_limiter", "_send")

    def __init__(self, send: Send, limiter: AsyncRateLimiter) -> None:
        self._send = send
        self._limiter = limiter

    async def __call__(self, message: Message) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            await self._limiter.aclose()
        await self._send(message)


class _Lease:
    """The send and receive of a request holding a concurrency lease: each may end it.

    A streaming response holds its slot until its last chunk is sent; a client that goes
    away ends it as soon as the app hears of it (``http.disconnect``).
    """

    __slots__ = ("_decision", "_done", "_middleware", "_receive", "_send")

    def __init__(self, middleware: RateLimitMiddleware, decision: Decision, send: Send,
                 receive: Receive) -> None:
        self._middleware = middleware
        self._decision = decision
        self._send = send
        self._receive = receive
        self._done = False

    async def send(self, message: Message) -> None:
        await self._send(message)
        kind = message["type"]
        if kind == "http.response.pathsend" or (
                kind == "http.response.body" and not message.get("more_body", False)):
            await self.release()

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            await self.release()
        return message

    async def release(self) -> None:
        if not self._done:
            self._done = True
            await self._middleware.arelease(self._decision)


class _Settler:
    """Settles one decision's reservation from its response's start message."""

    __slots__ = ("_decision", "_limiter", "_task")

    def __init__(self, limiter: AsyncRateLimiter, decision: Decision) -> None:
        self._limiter = limiter
        self._decision = decision
        self._task: asyncio.Future[None] | None = None

    def start(self, message: Message) -> None:
        deltas = settle_deltas(self._decision.plan, ResponseInfo(
            message.get("status", 200), message.get("headers", ())))
        if deltas is not None and not self._limiter.settle_nowait(self._decision, deltas):
            self._task = asyncio.ensure_future(self._limiter.asettle(self._decision, deltas))

    async def finish(self) -> None:
        if self._task is not None:
            await self._task


class _HeaderSend:
    """Adds the quota headers to the first response-start message, once; forwards the rest.

    Bodies, trailers and ``http.response.pathsend`` pass through untouched. *on_start*
    sees the app's own start message first (its status and headers).
    """

    __slots__ = ("_done", "_headers", "_on_start", "_send", "_start")

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]],
                 start: str = "http.response.start",
                 on_start: Callable[[Message], None] | None = None) -> None:
        self._send = send
        self._headers = headers
        self._start = start
        self._on_start = on_start
        self._done = False

    async def __call__(self, message: Message) -> None:
        if not self._done and message["type"] == self._start:
            self._done = True
            if self._on_start is not None:
                self._on_start(message)
            if self._headers:
                message = {**message, "headers": [*message.get("headers", ()),
                                                  *self._headers]}
        await self._send(message)
