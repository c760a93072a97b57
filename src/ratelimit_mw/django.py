"""Django, the Django way: ``MIDDLEWARE = ["ratelimit_mw.django.RateLimitMiddleware",
...]`` configured from ``settings.RATELIMIT``, the decision at ``request.ratelimit``.

Django is imported when the middleware is built, not with this module: importing
``ratelimit_mw`` (or this module) imports no framework.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ._core import Decision, Plan
from ._framework_config import options_from
from ._headers import PROBLEM_JSON, problem_body, unavailable_body
from ._middleware import MiddlewareBase
from ._request import RequestInfo, request_paths
from ._response import ResponseInfo, settle_deltas
from ._storage.limiter import AsyncRateLimiter, RateLimiter
from .errors import ConfigurationError, StorageError

__all__ = ["RateLimitMiddleware"]

#: The key of ``settings.RATELIMIT`` naming the view that answers refused requests.
LIMITED_VIEW = "limited_view"


def _problem(status: int, body: bytes) -> Any:
    from django.http import HttpResponse

    return HttpResponse(body, status=status, content_type=PROBLEM_JSON)


def _too_many_requests(request: Any) -> Any:
    """The default 429: RFC 9457 problem details naming the violated policies."""
    decision: Decision = request.ratelimit
    return _problem(429, problem_body(decision))


class RateLimitMiddleware(MiddlewareBase[Any, Any]):
    """Rate limiting and quota headers as a Django middleware, for sync and async views.

    Example (``settings.py``)::

        MIDDLEWARE = ["ratelimit_mw.django.RateLimitMiddleware", ...]   # first
        RATELIMIT = {
            "storage": "redis://localhost:6379/0",
            "default_limits": "100/minute",
            "rules": [{"path": "/health", "exempt": True}],    # or Rule(...) objects
            "limited_view": "myapp.views.too_many_requests",  # optional
        }

    ``settings.RATELIMIT`` takes the configuration file's keys (plus `Rule` objects, a
    key function and the middleware's callables); `ratelimit_mw.limit` and
    `ratelimit_mw.exempt` on views are found from the URLconf at the first request.
    The decision is at ``request.ratelimit`` (``None`` when exempt). A refused request
    gets a 429 ``application/problem+json`` body, or the response of ``limited_view``
    (a view or its dotted path, called with the request). Under ASGI the middleware
    runs async and checks with one non-blocking storage call.

    Security: the client is ``REMOTE_ADDR``; behind a proxy configure trusted proxies
    in ``"key"`` (`ratelimit_mw.keys.client_ip`). Put the middleware first, so a refused
    request costs nothing else.
    """

    sync_capable = True
    async_capable = True
    _protocol = "Django"
    _too_many_requests = staticmethod(_too_many_requests)

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction
        from django.conf import settings

        data = getattr(settings, "RATELIMIT", None) or {}
        if not isinstance(data, Mapping):
            raise ConfigurationError("settings.RATELIMIT must be a dict of the "
                                     "configuration file's keys")
        data = dict(data)
        limited = data.pop(LIMITED_VIEW, None)
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
        # Django picks the mode per handler: the limiter matches it.
        self._limiter_class = AsyncRateLimiter if self._async else RateLimiter
        options = options_from(data, "settings.RATELIMIT")
        super().__init__(get_response, limited_app=_view(limited), **options.kwargs())
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        if not self.enabled:
            return self.get_response(request)
        plan = self._plan(request)
        if plan is None:
            return self.get_response(request)
        started = time.perf_counter() if self._on_event is not None else 0.0
        decision, error = self._decide(plan)
        through, headers = self._decided(request, plan, decision, started, error)
        if not through:
            self.release(decision)
            return _with_headers(self._refusal(request), headers)
        try:
            response = self.get_response(request)
        except BaseException:
            self.release(decision)
            raise
        deltas = _deltas(decision, response)
        if deltas is not None:
            self._checker.settle(decision, deltas)
        if decision.lease and getattr(response, "streaming", False):
            # Django closes a response once it is sent or abandoned: a streaming one
            # holds its slot until then (the closers close() runs are Django's own).
            response._resource_closers.append(lambda: self.release(decision))
        else:
            self.release(decision)
        return _with_headers(response, headers)

    async def _acall(self, request: Any) -> Any:
        if not self.enabled:
            return await self.get_response(request)
        plan = self._plan(request)
        if plan is None:
            return await self.get_response(request)
        started = time.perf_counter() if self._on_event is not None else 0.0
        error: StorageError | None = None
        decision = self._checker.check_nowait(plan)
        if decision is None:
            decision, error = await self._adecide(plan)
        through, headers = self._decided(request, plan, decision, started, error)
        if through:
            # Async Django releases a lease when the view returns: the closers a
            # streaming response runs when sent are sync, called from a thread.
            try:
                response = await self.get_response(request)
            finally:
                await self.arelease(decision)
            deltas = _deltas(decision, response)
            if deltas is not None:
                await self._checker.asettle(decision, deltas)
        elif self.limited_app is _too_many_requests or (decision.storage_error
                                                       and not decision.quotas):
            response = self._refusal(request)
        else:
            from asgiref.sync import iscoroutinefunction, sync_to_async

            view = self.limited_app
            # A sync view of yours may touch the database: Django runs those in a thread.
            response = await (view(request) if iscoroutinefunction(view)
                              else sync_to_async(view)(request))
        if not through:
            await self.arelease(decision)
        return _with_headers(response, headers)

    def _plan(self, request: Any) -> Plan | None:
        if self._routes is not None:
            from django.urls import get_resolver

            self._load_routes(get_resolver())
        info = RequestInfo.from_environ(request.META)
        # path_info is what Django routes, already decoded (ASGI and WSGI alike).
        info.path, info.routed_path = request_paths(request.path_info)
        plan = self.policy.plan(info)
        request.ratelimit = None
        return plan

    def _decided(self, request: Any, plan: Plan, decision: Decision, started: float,
                 error: StorageError | None) -> tuple[bool, list[tuple[str, str]]]:
        through = decision.allowed if self._on_event is None and decision.allowed else (
            self._report(plan, decision, started, error))
        request.ratelimit = decision
        return through, self.renderer.render(decision, shadow=through and not decision.allowed)

    def _refusal(self, request: Any) -> Any:
        decision: Decision = request.ratelimit
        if decision.storage_error and not decision.quotas:  # on_storage_error="deny"
            response = _problem(503, unavailable_body())
            response["Retry-After"] = "1"
            return response
        return self.limited_app(request)


def _deltas(decision: Decision, response: Any) -> tuple[int, ...] | None:
    """What *response* changes in *decision*'s reservation (``count_when`` /
    ``response_cost``); Django's response is complete here, so it is settled at once."""
    if decision.plan.settle is None or not decision.allowed or decision.storage_error:
        return None
    return settle_deltas(decision.plan, ResponseInfo(response.status_code,
                                                     list(response.items())))


def _with_headers(response: Any, headers: list[tuple[str, str]]) -> Any:
    for name, value in headers:
        response[name] = value
    return response


def _view(spec: object) -> Callable[[Any], Any] | None:
    """``limited_view``: a view, its dotted path, or ``None`` for the default 429."""
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        from django.utils.module_loading import import_string

        try:
            found: Callable[[Any], Any] = import_string(spec)
        except ImportError as error:
            raise ConfigurationError(f"settings.RATELIMIT[{LIMITED_VIEW!r}]={spec!r}: "
                                     f"{error}") from None
        return found
    raise ConfigurationError(f"settings.RATELIMIT[{LIMITED_VIEW!r}]={spec!r}: give a view "
                             "or its dotted path, e.g. 'myapp.views.too_many_requests'")
