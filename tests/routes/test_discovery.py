"""``@limit`` / ``@exempt`` found from real routers, and the drift check.

Each test builds a real app (Starlette, FastAPI, Litestar, Flask, Django) and asks it
through httpx's in-process transports, on memory storage; one test counts the Redis
commands of a decorated route with MONITOR on a private server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from litestar import Litestar, Router, get, post
from litestar import Request as LitestarRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

import ratelimit_mw._routers as routers
from ratelimit_mw import (
    ConfigurationError,
    RateLimitMiddleware,
    Rule,
    WSGIRateLimitMiddleware,
    exempt,
    limit,
)
from tests.redis_monitor import Monitor, client_commands
from tests.redis_server import PrivateRedis

CLIENT = "203.0.113.7"


# --- helpers -----------------------------------------------------------------------------


BASE = "http://testserver"


async def asgi_requests(app: Any, method: str, paths: list[str]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app, client=(CLIENT, 1234))
    async with httpx.AsyncClient(transport=transport) as client:
        # Full URLs: relative to a base URL, "//login" would name a host.
        return [await client.request(method, BASE + path) for path in paths]


def wsgi_requests(app: Any, method: str, paths: list[str]) -> list[httpx.Response]:
    transport = httpx.WSGITransport(app, remote_addr=CLIENT)
    with httpx.Client(transport=transport) as client:
        return [client.request(method, BASE + path) for path in paths]


def statuses(responses: list[httpx.Response]) -> list[int]:
    return [r.status_code for r in responses]


def policy(response: httpx.Response) -> str | None:
    """The policy name of the response's ``RateLimit-Policy`` (one policy in force)."""
    value = response.headers.get("ratelimit-policy")
    return None if value is None else value.split(";")[0].strip('"')


def drift_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "ratelimit_mw" and r.levelno == logging.WARNING
            and "matches no route" in r.getMessage()]


# --- Starlette ---------------------------------------------------------------------------


@limit("5/minute")
async def login(request: Request) -> Response:
    return PlainTextResponse("ok")


async def login_form(request: Request) -> Response:
    return PlainTextResponse("form")


@limit("3/minute")
async def item(request: Request) -> Response:
    return PlainTextResponse(f"item {request.path_params['id']}")


@limit("2/minute")
async def files(request: Request) -> Response:
    return PlainTextResponse("files")


@exempt
async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def plain(request: Request) -> Response:
    return PlainTextResponse("plain")


def starlette_app() -> Starlette:
    return Starlette(routes=[
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Mount("/api", routes=[Route("/items/{id:int}", item)]),
        Route("/files/{rest:path}", files),
        Route("/health", health),
        Route("/plain", plain),
    ])


async def test_starlette_decorated_route_refused_on_the_6th() -> None:
    app = RateLimitMiddleware(starlette_app(), storage="memory://",
                              default_limits="60/minute")
    responses = await asgi_requests(app, "POST", ["/login"] * 6)
    assert statuses(responses) == [200] * 5 + [429]
    assert {policy(r) for r in responses} == {"/login"}


async def test_starlette_path_variants_share_the_decorated_counter() -> None:
    app = RateLimitMiddleware(starlette_app(), storage="memory://",
                              default_limits="60/minute")
    variants = ["/login/", "//login", "/./login", "/log%69n", "/api/../login"]
    responses = await asgi_requests(app, "POST", [*variants, "/login"])
    assert [policy(r) for r in responses] == ["/login"] * 6
    assert statuses(responses)[-1] == 429


async def test_starlette_mount_and_converter_match_what_the_router_matches() -> None:
    app = RateLimitMiddleware(starlette_app(), storage="memory://",
                              default_limits="60/minute")
    counted = await asgi_requests(app, "GET", ["/api/items/7", "/api/items/8/",
                                               "/api/items/9", "/api/items/1"])
    assert [policy(r) for r in counted] == ["/api/items/{id:int}"] * 4
    assert statuses(counted)[-1] == 429
    # {id:int} does not route /api/items/abc: neither does the rule (the defaults apply).
    [other] = await asgi_requests(app, "GET", ["/api/items/abc"])
    assert policy(other) == "default"


async def test_starlette_path_converter_covers_the_empty_rest() -> None:
    app = RateLimitMiddleware(starlette_app(), storage="memory://",
                              default_limits="60/minute")
    # /files/ routes to the endpoint with rest="" although the normalised path is /files.
    responses = await asgi_requests(app, "GET", ["/files/", "/files/a//b", "/files/c"])
    assert [policy(r) for r in responses] == ["/files/{rest:path}"] * 3
    assert statuses(responses) == [200, 200, 429]


async def test_starlette_methods_come_from_the_route() -> None:
    app = RateLimitMiddleware(starlette_app(), storage="memory://",
                              default_limits="60/minute")
    # GET /login is another endpoint, undecorated: the defaults, not the login limit.
    [form] = await asgi_requests(app, "GET", ["/login"])
    assert (form.text, policy(form)) == ("form", "default")
    [undecorated, exempted] = await asgi_requests(app, "GET", ["/plain", "/health"])
    assert policy(undecorated) == "default"
    assert exempted.status_code == 200
    assert "ratelimit-policy" not in exempted.headers


async def test_explicit_rules_win_over_decorators() -> None:
    app = RateLimitMiddleware(starlette_app(), storage="memory://",
                              default_limits="60/minute",
                              rules=[Rule("/login", "1/minute", name="override")])
    responses = await asgi_requests(app, "POST", ["/login", "/login"])
    assert statuses(responses) == [200, 429]
    assert {policy(r) for r in responses} == {"override"}


async def test_add_middleware_finds_the_router_through_scope_app() -> None:
    app = starlette_app()
    app.add_middleware(RateLimitMiddleware, storage="memory://", default_limits="60/minute")
    responses = await asgi_requests(app, "POST", ["/login"] * 6)
    assert statuses(responses) == [200] * 5 + [429]


async def test_routes_are_read_at_lifespan_startup() -> None:
    app = RateLimitMiddleware(starlette_app(), storage="memory://",
                              default_limits="60/minute")
    assert [r.name for r in app.policy.table.rules] == []
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        inbox.put_nowait(message)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
              inbox.get, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert [r.name for r in app.policy.table.rules] == [
        "/login", "/api/items/{id:int}", "/files/{rest:path}", "/health"]


# --- FastAPI -----------------------------------------------------------------------------


def fastapi_app() -> FastAPI:
    api = FastAPI()
    users = APIRouter(prefix="/users")

    @users.post("/{user_id}/login")
    @limit("2/minute")
    async def user_login(user_id: int) -> dict[str, int]:
        return {"user": user_id}

    @users.get("/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        return {"user": user_id}

    api.include_router(users, prefix="/v1")
    return api


async def test_fastapi_include_router_prefixes() -> None:
    app = RateLimitMiddleware(fastapi_app(), storage="memory://", default_limits="60/minute")
    responses = await asgi_requests(app, "POST", ["/v1/users/1/login", "/v1/users/2/login/",
                                                  "/v1/users/3/login"])
    assert statuses(responses)[::2] == [200, 429]
    assert {policy(r) for r in responses} == {"/v1/users/{user_id}/login"}
    [other] = await asgi_requests(app, "GET", ["/v1/users/1"])
    assert (other.status_code, policy(other)) == (200, "default")


# --- Litestar ----------------------------------------------------------------------------


@post("/login", status_code=200)
@limit("2/minute")
async def litestar_login() -> str:
    return "ok"


@get("/items/{item_id:int}")
@limit("2/minute")
async def litestar_item(request: LitestarRequest[Any, Any, Any]) -> str:
    return f"item {request.path_params['item_id']}"


@get("/items/special")
async def litestar_special() -> str:
    return "special"


def litestar_app() -> Litestar:
    # logging_config=None: Litestar's own would replace the root handlers pytest reads.
    return Litestar([litestar_login, Router("/api", route_handlers=[
        litestar_item, litestar_special])], logging_config=None)


async def test_litestar_handlers() -> None:
    app = RateLimitMiddleware(litestar_app(), storage="memory://",
                              default_limits="60/minute")
    logins = await asgi_requests(app, "POST", ["/login"] * 3)
    assert statuses(logins) == [200, 200, 429]
    items = await asgi_requests(app, "GET", ["/api/items/1", "/api/items/2/",
                                             "/api/items/3", "/api/items/special"])
    assert statuses(items) == [200, 200, 429, 200]
    assert [policy(r) for r in items] == ["/api/items/{item_id:int}"] * 3 + ["default"]


# --- Flask -------------------------------------------------------------------------------


def flask_app(**middleware: Any) -> flask.Flask:
    app = flask.Flask(__name__)
    reports = flask.Blueprint("reports", __name__, url_prefix="/reports")

    @reports.get("/<int:report_id>")
    def report(report_id: int) -> str:
        return f"report {report_id}"

    @reports.get("/summary")
    @limit("5/minute")
    def summary() -> str:
        return "summary"

    limit("2/minute")(reports)

    @app.post("/login")
    @limit("3/minute")
    def flask_login() -> str:
        return "ok"

    @app.get("/login")
    def flask_form() -> str:
        return "form"

    @app.get("/health")
    @exempt
    def flask_health() -> str:
        return "ok"

    @app.get("/files/<path:name>")
    @limit("2/minute")
    def flask_files(name: str) -> str:
        return name

    app.register_blueprint(reports)
    app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, storage="memory://", default_limits="60/minute", **middleware)
    return app


def test_flask_view_blueprint_and_converters() -> None:
    app = flask_app()
    logins = wsgi_requests(app, "POST", ["/login", "/login/", "//login", "/login"])
    assert statuses(logins)[-1] == 429
    assert {policy(r) for r in logins} == {"/login"}
    [form] = wsgi_requests(app, "GET", ["/login"])
    assert (form.text, policy(form)) == ("form", "default")
    reports = wsgi_requests(app, "GET", ["/reports/1", "/reports/2", "/reports/3",
                                         "/reports/x"])
    assert statuses(reports)[:3] == [200, 200, 429]
    # <int:report_id> does not route /reports/x: the defaults apply there.
    assert [policy(r) for r in reports] == ["/reports/<int:report_id>"] * 3 + ["default"]
    # The view's own decorator wins over its blueprint's.
    [summary] = wsgi_requests(app, "GET", ["/reports/summary"])
    assert (summary.status_code, summary.headers["x-ratelimit-limit"]) == (200, "5")
    files = wsgi_requests(app, "GET", ["/files/a/b", "/files/c", "/files/d"])
    assert statuses(files) == [200, 200, 429]
    [health] = wsgi_requests(app, "GET", ["/health"])
    assert health.status_code == 200
    assert "ratelimit-policy" not in health.headers


def test_flask_concurrent_first_requests_read_the_router_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    original = routers.read_routes

    def counted(candidates: Any) -> Any:
        calls.append(candidates)
        return original(candidates)

    monkeypatch.setattr(routers, "read_routes", counted)
    app = flask_app()
    barrier = threading.Barrier(8)
    results: list[str | None] = []

    def first_request() -> None:
        barrier.wait()
        [response] = wsgi_requests(app, "POST", ["/login"])
        results.append(policy(response))

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == ["/login"] * 8


# --- Django ------------------------------------------------------------------------------


@pytest.fixture
def django_wsgi(django_urls: None) -> Any:
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def test_django_path_include_and_re_path(django_wsgi: Any) -> None:
    app = WSGIRateLimitMiddleware(django_wsgi, storage="memory://",
                                  default_limits="60/minute")
    logins = wsgi_requests(app, "POST", ["/login", "/login/", "/login"])
    # path("login") does not route /login/ (a 404), but the limit counts it all the same.
    assert statuses(logins) == [200, 404, 429]
    assert {policy(r) for r in logins} == {"/login"}
    items = wsgi_requests(app, "GET", ["/api/items/1/", "/api/items/2", "/api/items/3/",
                                       "/api/items/4/", "/api/items/x/"])
    # Django's <int:pk>/ with its slash: /api/items/2 (no slash) is counted too.
    assert [policy(r) for r in items] == ["/api/items/<int:pk>/"] * 4 + ["default"]
    assert statuses(items)[3] == 429
    archive = wsgi_requests(app, "GET", ["/archive/2024/", "/archive/2025", "/archive/2026/",
                                         "/archive/99/"])
    assert [policy(r) for r in archive] == ["archive"] * 3 + ["default"]
    assert statuses(archive)[2] == 429
    [health, plain_view] = wsgi_requests(app, "GET", ["/health", "/plain"])
    assert "ratelimit-policy" not in health.headers
    assert policy(plain_view) == "default"


async def test_django_asgi(django_urls: None) -> None:
    from django.core.asgi import get_asgi_application

    app = RateLimitMiddleware(get_asgi_application(), storage="memory://",
                              default_limits="60/minute")
    responses = await asgi_requests(app, "POST", ["/login"] * 3)
    assert statuses(responses) == [200, 200, 429]


# --- the drift check ---------------------------------------------------------------------

TYPO = [Rule("/logn", "5/minute"), Rule("/api/itemz/{id}", "1/minute"),
        Rule("/health", exempt=True)]


async def test_drift_starlette(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_mw")
    app = RateLimitMiddleware(starlette_app(), storage="memory://", rules=TYPO,
                              default_limits="60/minute")
    await asgi_requests(app, "GET", ["/plain", "/plain"])
    lines = drift_lines(caplog)
    assert len(lines) == 2
    assert "Rule('/logn')" in lines[0]
    assert "Rule('/api/itemz/{id}')" in lines[1]


async def test_drift_fastapi_and_litestar(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_mw")
    for built in (fastapi_app(), litestar_app()):
        app = RateLimitMiddleware(built, storage="memory://", default_limits="60/minute",
                                  rules=[Rule("/v1/users/{id}/lgin", "1/minute"),
                                         Rule("/v1/users/{id}", "9/minute"),
                                         Rule("/api/items/{id}", "9/minute")])
        await asgi_requests(app, "GET", ["/"])
    lines = drift_lines(caplog)
    # FastAPI has /v1/users/{id} but not /api/items; Litestar the other way round.
    assert [line.split(")")[0] for line in lines] == [
        "Rule('/v1/users/{id}/lgin'", "Rule('/api/items/{id}'",
        "Rule('/v1/users/{id}/lgin'", "Rule('/v1/users/{id}'"]
    assert "fastapi app" in lines[0]
    assert "litestar app" in lines[2]


def test_drift_flask(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_mw")
    app = flask_app(rules=[Rule("/reports/{id}", "1/minute"), Rule("/reprts/{id}", "1/minute")])
    wsgi_requests(app, "GET", ["/health", "/health"])
    lines = drift_lines(caplog)
    assert len(lines) == 1
    assert "Rule('/reprts/{id}')" in lines[0]
    assert "flask app" in lines[0]


def test_drift_django(django_wsgi: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_mw")
    app = WSGIRateLimitMiddleware(django_wsgi, storage="memory://", default_limits="60/minute",
                                  rules=[Rule("/archive/{year}", "1/minute"),
                                         Rule("/archiv/{year}", "1/minute")])
    wsgi_requests(app, "GET", ["/health"])
    lines = drift_lines(caplog)
    assert len(lines) == 1
    assert "Rule('/archiv/{year}')" in lines[0]
    assert "django app" in lines[0]


async def test_no_router_is_said_once_and_never_fails(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_mw")

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("bare")(scope, receive, send)

    app = RateLimitMiddleware(bare, storage="memory://", default_limits="60/minute",
                              rules=[Rule("/anything", "1/minute")])
    responses = await asgi_requests(app, "GET", ["/", "/anything", "/anything"])
    assert statuses(responses) == [200, 200, 429]
    said = [r for r in caplog.records if "no router found" in r.getMessage()]
    # Endpoints of this process carry @limit: the warning level says they are not applied.
    assert [r.levelno for r in said] == [logging.WARNING]


# --- the decorators' own checks ----------------------------------------------------------


@pytest.mark.parametrize(("make", "message"), [
    (lambda: limit("lots"), "limit('lots'): 'lots' is not a rate limit"),
    (lambda: limit("5/minute", cost=0), "limit('5/minute'): cost must be"),
    (lambda: limit("5/minute", path="/x"), "the path comes from the route"),
    (lambda: limit("5/minute", colour="red"), "the options are Rule's"),
    (lambda: limit(None), "give rates"),  # type: ignore[arg-type]
    (lambda: limit("5/minute")(len), "cannot mark"),
])
def test_decorator_errors_name_what_to_change(make: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=None) as raised:
        make()
    assert message in str(raised.value)


def test_stacked_decorators_first_written_first() -> None:
    @limit("1/minute", methods=["POST"])
    @limit("9/minute")
    def view() -> None: ...

    marks = view.__ratelimit_mw__  # type: ignore[attr-defined]
    assert [(r.limits, r.methods) for r in marks] == [("1/minute", ["POST"]),
                                                      ("9/minute", None)]


# --- one storage round trip --------------------------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.stop()


@pytest.mark.redis
async def test_decorated_route_one_script_call_per_request(
        private_redis: PrivateRedis, tmp_path: Path) -> None:
    app = RateLimitMiddleware(starlette_app(), storage=private_redis.url,
                              default_limits="60/minute")
    transport = httpx.ASGITransport(app, client=(CLIENT, 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        await c.post("/login")  # warm up: connect, load the script, read the router
        monitor = Monitor(private_redis.port, tmp_path / "monitor.txt")
        for path in ("/login", "/api/items/1", "/plain"):
            assert (await c.request("POST" if path == "/login" else "GET", path)
                    ).status_code == 200
        commands = client_commands(monitor.stop())
    await app.limiter.aclose()  # type: ignore[union-attr]
    assert commands == ["EVALSHA"] * 3


async def test_a_second_layer_of_escapes_cannot_leave_a_decorated_route() -> None:
    @limit("1/minute")
    async def note(request: Request) -> Response:
        return PlainTextResponse(request.path_params["slug"])

    app = RateLimitMiddleware(
        Starlette(routes=[Route("/notes/{slug}", note), Route("/health", health)]),
        storage="memory://", default_limits="60/minute")
    # The server decodes %25 once: Starlette serves /notes/{slug} with slug
    # "..%2Fhealth", which decoding again would read as the exempt /health.
    responses = await asgi_requests(app, "GET", ["/notes/..%252Fhealth"] * 2)
    assert [r.text for r in responses][:1] == ["..%2Fhealth"]
    assert statuses(responses) == [200, 429]
    assert {policy(r) for r in responses} == {"/notes/{slug}"}


def test_a_second_layer_of_escapes_cannot_leave_a_decorated_flask_view() -> None:
    app = flask_app()
    # werkzeug serves /files/<path:name> with name "..%2F..%2Fhealth".
    responses = wsgi_requests(app, "GET", ["/files/..%252F..%252Fhealth"] * 3)
    assert statuses(responses) == [200, 200, 429]
    assert {policy(r) for r in responses} == {"/files/<path:name>"}


async def test_a_router_that_fails_to_read_is_said_and_rules_still_apply(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_mw")

    def broken(candidates: Any) -> Any:
        raise AttributeError("a framework's internals changed")

    monkeypatch.setattr(routers, "read_routes", broken)
    app = RateLimitMiddleware(starlette_app(), storage="memory://", default_limits="60/minute",
                              rules=[Rule("/plain", "1/minute")])
    responses = await asgi_requests(app, "GET", ["/plain", "/plain"])
    assert statuses(responses) == [200, 429]
    said = [r for r in caplog.records if "could not read the routes" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING]


async def test_litestar_widened_parameters_are_said(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_mw")
    app = RateLimitMiddleware(litestar_app(), storage="memory://", default_limits="60/minute")
    await asgi_requests(app, "GET", ["/api/items/1"])
    notes = [r.getMessage() for r in caplog.records if "matched as any one segment" in
             r.getMessage()]
    assert notes == ["route /api/items/{item_id:int}: {item_id:int} matched as any one "
                     "segment; its limits may cover more paths than the route"]


@pytest.mark.redis
def test_decorated_flask_view_one_script_call_per_request(
        private_redis: PrivateRedis, tmp_path: Path) -> None:
    app = flask_app()
    middleware = app.wsgi_app
    # Rebuilt on the private Redis, as the WSGI middleware a server would run.
    app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        middleware.app, storage=private_redis.url,  # type: ignore[attr-defined]
        default_limits="60/minute")
    transport = httpx.WSGITransport(app, remote_addr=CLIENT)
    with httpx.Client(transport=transport, base_url="http://testserver") as client:
        client.post("/login")  # warm up: connect, load the script, read the router
        monitor = Monitor(private_redis.port, tmp_path / "monitor.txt")
        assert [client.post("/login").status_code, client.get("/reports/1").status_code,
                client.get("/files/a/b").status_code] == [200, 200, 200]
        commands = client_commands(monitor.stop())
    app.wsgi_app.limiter.close()  # type: ignore[attr-defined]
    assert commands == ["EVALSHA"] * 3


def test_django_pattern_with_inner_anchors_is_widened_and_said(
        django_wsgi: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from django.conf import settings

    caplog.set_level(logging.INFO, logger="ratelimit_mw")
    monkeypatch.setattr(settings, "ROOT_URLCONF", "tests.routes.django_urls_anchors")
    app = WSGIRateLimitMiddleware(django_wsgi, storage="memory://",
                                  default_limits="60/minute")
    responses = wsgi_requests(app, "GET", ["/legacy/new", "/legacy/new", "/legacy/new"])
    assert statuses(responses) == [200, 200, 429]
    # Wider, not narrower: the limit also covers paths the pattern may not route.
    [other] = wsgi_requests(app, "GET", ["/elsewhere"])
    assert policy(other) == "/^legacy/(?:^old|new)$"
    notes = [r.getMessage() for r in caplog.records if "inner anchors" in r.getMessage()]
    assert len(notes) == 1


def test_a_proxy_in_the_wrapper_chain_does_not_stop_the_search() -> None:
    app = flask_app()

    class Dispatcher:
        """A WSGI wrapper of yours holding Flask's proxy beside the app."""

        def __init__(self, wrapped: Any) -> None:
            self.current = flask.current_app  # raises on any attribute outside a context
            self.wrapped = wrapped

        def __call__(self, environ: Any, start_response: Any) -> Any:
            return self.wrapped(environ, start_response)

    middleware = WSGIRateLimitMiddleware(Dispatcher(app), storage="memory://",
                                         default_limits="60/minute")
    wsgi_requests(middleware, "POST", ["/login"])
    assert [rule.name for rule in middleware.policy.table.rules][:1] == ["/login"]
