"""Pure WSGI rate-limit middleware."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from ._core import Decision
from ._headers import PROBLEM_JSON, problem_body, unavailable_body
from ._middleware import MiddlewareBase
from ._request import RequestInfo
from ._response import ResponseInfo, settle_deltas
from ._storage.limiter import RateLimiter
from ._types import Environ, OptExcInfo, StartResponse, WriteCallable, WSGIApp

__all__ = ["ENVIRON_KEY", "WSGIRateLimitMiddleware"]

#: Where the app finds the `Decision` of its request.
ENVIRON_KEY = "ratelimit_mw.decision"


def _problem(start_response: StartResponse, status: str, body: bytes,
             extra: list[tuple[str, str]]) -> list[bytes]:
    start_response(status, [("Content-Type", PROBLEM_JSON),
                            ("Content-Length", str(len(body))), *extra])
    return [body]



def _too_many_requests(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """The default 429: RFC 9457 problem details naming the violated policies."""
    decision: Decision = environ[ENVIRON_KEY]
    return _problem(start_response, "429 Too Many Requests", problem_body(decision), [])



def _unavailable(environ: Environ, start_response: StartResponse) -> list[bytes]:
    return _problem(start_response, "503 Service Unavailable", unavailable_body(),
                    [("Retry-After", "1")])


class WSGIRateLimitMiddleware(MiddlewareBase[RateLimiter, WSGIApp]):
    """Rate limiting and quota headers in front of any WSGI application.

    Example::

        flask_app.wsgi_app = WSGIRateLimitMiddleware(
            flask_app.wsgi_app,
            storage="redis://localhost:6379/0",
            default_limits="100/minute",
            rules=[Rule("/login", "5/minute", methods=["POST"])],
        )

    The same options as `ratelimit_mw.RateLimitMiddleware`. Allowed requests reach
    *app* with the quota headers added to its ``start_response``; refused ones get a 429
    ``application/problem+json`` body (or *limited_app*, a WSGI app of yours). The app
    finds the decision in ``environ["ratelimit_mw.decision"]``; requests that
    ``exempt_when`` exempts, and every request when ``enabled=False``, pass through
    without one (and without headers). The app's iterable is
    returned as it is, so ``close()``, ``write`` and ``exc_info`` keep working.

    Security: the client is ``REMOTE_ADDR`` unless you configure trusted proxies in
    `ratelimit_mw.keys.client_ip`; paths are normalised before rules match.
    """

    _limiter_class = RateLimiter
    _protocol = "WSGI"
    _too_many_requests = staticmethod(_too_many_requests)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self.enabled:
            return self.app(environ, start_response)
        if self._routes is not None:
            self._load_routes()
        plan = self.policy.plan(RequestInfo.from_environ(environ))
        if plan is None:
            return self.app(environ, start_response)
        started = time.perf_counter() if self._on_event is not None else 0.0
        decision, error = self._decide(plan)
        through = decision.allowed if self._on_event is None and decision.allowed else (
            self._report(plan, decision, started, error))
        environ[ENVIRON_KEY] = decision
        extra = self.renderer.render(decision, shadow=through and not decision.allowed)
        if decision.lease:
            return self._leased(environ, start_response, decision, extra, through)
        if through and plan.settle is not None and decision.allowed and (
                not decision.storage_error):
            # The reservation is settled when the app starts its response: before its
            # body reaches the client, so the next request sees the settled count.
            return self.app(environ, _HeaderStartResponse(
                start_response, extra, _settler(self._checker, decision)))
        if through:
            app = self.app
        elif decision.storage_error and not decision.quotas:  # on_storage_error="deny"
            app = _unavailable
        else:
            app = self.limited_app
        if not extra:
            return app(environ, start_response)
        return app(environ, _HeaderStartResponse(start_response, extra))


    def _leased(self, environ: Environ, start_response: StartResponse, decision: Decision,
                extra: list[tuple[str, str]], through: bool) -> Iterable[bytes]:
        """A request holding a concurrency lease: released when the server closes the
        response iterable (after its last chunk, or when the client went away), or when
        the app raises before returning one."""
        if not through:  # refused after a cluster slot took the lease: give it back
            self.release(decision)
            return self.limited_app(environ, _HeaderStartResponse(start_response, extra))
        settle = _settler(self._checker, decision) if (
            decision.plan.settle is not None and not decision.storage_error) else None
        try:
            body = self.app(environ, _HeaderStartResponse(start_response, extra, settle))
        except BaseException:
            self.release(decision)
            raise
        return _Leased(body, self, decision)


class _Leased:
    """A response iterable whose ``close()`` also ends the request's lease.

    The server calls ``close()`` once the response is sent or abandoned (PEP 3333), so a
    streaming response holds its slot until its last chunk. The app's own iterable is
    closed first, as the server would have.
    """

    __slots__ = ("_body", "_decision", "_middleware")

    def __init__(self, body: Iterable[bytes], middleware: WSGIRateLimitMiddleware,
                 decision: Decision) -> None:
        self._body = body
        self._middleware = middleware
        self._decision: Decision | None = decision

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        decision, self._decision = self._decision, None
        if decision is None:
            return
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._middleware.release(decision)


def _settler(limiter: RateLimiter, decision: Decision) -> Callable[[str, list[tuple[str, str]]],
                                                                    None]:
    """Settles *decision*'s reservation from the app's status line and headers."""
    def settle(status: str, headers: list[tuple[str, str]]) -> None:
        code = status.split(" ", 1)[0]
        deltas = settle_deltas(decision.plan, ResponseInfo(
            int(code) if code.isdigit() else 500, headers))
        if deltas is not None:
            limiter.settle(decision, deltas)
    return settle


class _HeaderStartResponse:
    """``start_response`` that appends the quota headers; keeps ``exc_info`` and ``write``.

    *on_start* sees the app's own status and headers first (a settle). A second call
    (with ``exc_info``, replacing the response) is not settled again.
    """

    __slots__ = ("_extra", "_on_start", "_start_response")

    def __init__(self, start_response: StartResponse, extra: list[tuple[str, str]],
                 on_start: Callable[[str, list[tuple[str, str]]], None] | None = None,
                 ) -> None:
        self._start_response = start_response
        self._extra = extra
        self._on_start = on_start

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: OptExcInfo | None = None, /) -> WriteCallable:
        if self._on_start is not None:
            on_start, self._on_start = self._on_start, None
            on_start(status, headers)
        headers = [*headers, *self._extra]
        if exc_info is None:
            return self._start_response(status, headers)
        return self._start_response(status, headers, exc_info)
