"""The examples in examples/, end to end.

Every example gets the same checks, through httpx's in-process transports and on memory
and on a real Redis: the 6th POST /login is a 429 problem, /items/<id> share a counter,
/health is exempt, allowed responses carry the quota headers and the handler sees the
decision. Then each runnable example is started as a real server and asked over TCP.

Each test builds its app with the example's factory, so counters never leak between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import http_sf
import httpx
import pytest
import redis

from ratelimit_mw import RateLimitMiddleware, WSGIRateLimitMiddleware
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DJANGO_DIR = EXAMPLES / "django"

CLIENT_IP = "203.0.113.7"
OTHER_IP = "198.51.100.9"
BASE_URL = "http://testserver"
QUOTA_HEADERS = ("ratelimit-policy", "ratelimit", "x-ratelimit-limit",
                 "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after")
QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"


# --- loading the examples ---------------------------------------------------------------


def load_example(name: str) -> ModuleType:
    """examples/<name>.py as a module (examples/ is not a package), imported once."""
    module_name = f"_example_{name}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return module


def load_django(entry: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """demo_site.wsgi or demo_site.asgi, with examples/django on sys.path."""
    monkeypatch.syspath_prepend(str(DJANGO_DIR))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    return importlib.import_module(f"demo_site.{entry}")


AsgiFactory = Callable[[str, pytest.MonkeyPatch], RateLimitMiddleware]

ASGI_EXAMPLES: dict[str, AsgiFactory] = {
    "starlette": lambda storage, _mp: load_example("starlette_app").create_app(storage),
    "fastapi": lambda storage, _mp: load_example("fastapi_app").create_app(storage),
    "django-asgi": lambda storage, mp: load_django("asgi", mp).create_application(storage),
}


def _flask(storage: str, _mp: pytest.MonkeyPatch) -> tuple[Any, WSGIRateLimitMiddleware]:
    flask_app = load_example("flask_app").create_app(storage)
    return flask_app, flask_app.wsgi_app


def _django_wsgi(storage: str, mp: pytest.MonkeyPatch) -> tuple[Any, WSGIRateLimitMiddleware]:
    middleware = load_django("wsgi", mp).create_application(storage)
    return middleware, middleware


#: name -> (storage, monkeypatch) -> (the WSGI app to serve, its rate-limit middleware)
WSGI_EXAMPLES: dict[str, Callable[[str, pytest.MonkeyPatch],
                                  tuple[Any, WSGIRateLimitMiddleware]]] = {
    "flask": _flask,
    "django-wsgi": _django_wsgi,
}


@dataclass
class AsgiExample:
    app: RateLimitMiddleware
    client: httpx.AsyncClient  # from CLIENT_IP
    other: httpx.AsyncClient  # the same app, from OTHER_IP


@dataclass
class WsgiExample:
    middleware: WSGIRateLimitMiddleware
    client: httpx.Client
    other: httpx.Client


@contextlib.asynccontextmanager
async def serve_asgi(app: RateLimitMiddleware) -> AsyncIterator[AsgiExample]:
    """Clients for *app* from two addresses; the limiter's storage closed afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        # Last in, first out: the storage's connections close after the clients.
        stack.push_async_callback(app.limiter.aclose)
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=(ip, 1234)), base_url=BASE_URL))
            for ip in (CLIENT_IP, OTHER_IP)
        ]
        yield AsgiExample(app, *clients)


@pytest.fixture(params=list(ASGI_EXAMPLES))
async def asgi_example(
    request: pytest.FixtureRequest, storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AsgiExample]:
    async with serve_asgi(ASGI_EXAMPLES[request.param](storage_url, monkeypatch)) as example:
        yield example


@pytest.fixture(params=list(WSGI_EXAMPLES))
def wsgi_example(
    request: pytest.FixtureRequest, storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WsgiExample]:
    served, middleware = WSGI_EXAMPLES[request.param](storage_url, monkeypatch)
    with contextlib.ExitStack() as stack:
        stack.callback(middleware.limiter.close)
        clients = [
            stack.enter_context(httpx.Client(
                transport=httpx.WSGITransport(app=served, remote_addr=ip), base_url=BASE_URL))
            for ip in (CLIENT_IP, OTHER_IP)
        ]
        yield WsgiExample(middleware, *clients)


# --- what every example must show, as checks on responses -------------------------------


def sf_list(value: str) -> list[tuple[Any, dict[str, Any]]]:
    """An RFC 9651 list field, parsed by a third-party parser (not the package's own)."""
    return cast("list[tuple[Any, dict[str, Any]]]", http_sf.parse(value.encode(),
                                                                  tltype="list"))


def quota(response: httpx.Response) -> tuple[str, int, int, int, int]:
    """(policy, quota, window, remaining, reset delay) from the draft headers, one policy."""
    [(policy, params)] = sf_list(response.headers["ratelimit-policy"])
    [(name, current)] = sf_list(response.headers["ratelimit"])
    assert name == policy, (response.headers["ratelimit-policy"], response.headers["ratelimit"])
    return policy, params["q"], params["w"], current["r"], current["t"]


def assert_quota_headers(response: httpx.Response, policy: str, limit: int,
                         remaining: int) -> None:
    """An allowed response with the draft and the legacy headers of one 1-minute policy."""
    assert response.status_code == 200, response.text
    name, q, window, r, delay = quota(response)
    assert (name, q, window, r) == (policy, limit, 60, remaining)
    assert 0 <= delay <= 60
    assert response.headers["x-ratelimit-limit"] == str(limit)
    assert response.headers["x-ratelimit-remaining"] == str(remaining)
    reset = int(response.headers["x-ratelimit-reset"])
    assert time.time() - 1 <= reset <= time.time() + 61
    assert "retry-after" not in response.headers


def assert_refused(response: httpx.Response, policy: str, limit: int) -> None:
    """A 429 from the middleware: problem details naming *policy*, Retry-After, quota 0."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    body = response.json()
    assert body["type"] == QUOTA_EXCEEDED
    assert body["status"] == 429
    assert body["violated-policies"] == [policy]
    assert quota(response)[:4] == (policy, limit, 60, 0)
    assert response.headers["x-ratelimit-remaining"] == "0"


def check_login(responses: list[httpx.Response]) -> None:
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    for count, response in enumerate(responses[:5], start=1):
        assert_quota_headers(response, "/login", 5, 5 - count)
    assert_refused(responses[5], "/login", 5)


def check_items(responses: list[httpx.Response]) -> None:
    """10 allowed across /items/1 and /items/2, then both refused: one counter."""
    assert [r.status_code for r in responses] == [200] * 10 + [429, 429]
    assert [r.json()["ratelimit"]["remaining"] for r in responses[:10]] == list(range(9, -1, -1))
    for response in responses[10:]:
        assert_refused(response, "/items/{id}", 10)


def check_health(health: list[httpx.Response], after: httpx.Response) -> None:
    """More /health calls than the default allows: all served, none counted."""
    assert len(health) > 60
    for response in health:
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert not [name for name in QUOTA_HEADERS if name in response.headers]
    # The default budget (60/minute, which GET / draws on) was not touched.
    assert_quota_headers(after, "default", 60, 59)


def check_decision(first: httpx.Response, second: httpx.Response) -> None:
    """The handler read the middleware's Decision: the same numbers as the headers."""
    for response, remaining in ((first, 9), (second, 8)):
        assert_quota_headers(response, "/items/{id}", 10, remaining)
        assert response.json()["ratelimit"] == {
            "allowed": True, "rule": "/items/{id}", "limit": 10, "remaining": remaining,
        }
    assert first.json()["item_id"] == 1
    assert second.json()["item_id"] == 2


# --- ASGI examples: Starlette, FastAPI, Django under ASGI -------------------------------


async def test_asgi_sixth_login_is_refused(asgi_example: AsgiExample) -> None:
    check_login([await asgi_example.client.post("/login") for _ in range(6)])


async def test_asgi_items_share_one_counter(asgi_example: AsgiExample) -> None:
    client = asgi_example.client
    responses = [await client.get(f"/items/{1 + n % 2}") for n in range(10)]
    responses += [await client.get("/items/1"), await client.get("/items/2")]
    check_items(responses)


async def test_asgi_health_is_exempt(asgi_example: AsgiExample) -> None:
    client = asgi_example.client
    health = [await client.get("/health") for _ in range(70)]
    check_health(health, await client.get("/"))


async def test_asgi_allowed_responses_carry_quota_headers(asgi_example: AsgiExample) -> None:
    client = asgi_example.client
    assert_quota_headers(await client.get("/"), "default", 60, 59)
    assert_quota_headers(await client.post("/login"), "/login", 5, 4)
    assert_quota_headers(await client.get("/items/7"), "/items/{id}", 10, 9)
    assert_quota_headers(await client.get("/"), "default", 60, 58)


async def test_asgi_decision_reaches_the_handler(asgi_example: AsgiExample) -> None:
    client = asgi_example.client
    check_decision(await client.get("/items/1"), await client.get("/items/2"))


async def test_asgi_clients_are_counted_apart(asgi_example: AsgiExample) -> None:
    check_login([await asgi_example.client.post("/login") for _ in range(6)])
    assert_quota_headers(await asgi_example.other.post("/login"), "/login", 5, 4)


async def test_asgi_home_page_lists_what_to_try(asgi_example: AsgiExample) -> None:
    response = await asgi_example.client.get("/")
    assert response.headers["content-type"].startswith("text/plain")
    assert f"-X POST {BASE_URL}/login" in response.text
    assert f"curl -i {BASE_URL}/health" in response.text


# --- WSGI examples: Flask, Django under WSGI --------------------------------------------


def test_wsgi_sixth_login_is_refused(wsgi_example: WsgiExample) -> None:
    check_login([wsgi_example.client.post("/login") for _ in range(6)])


def test_wsgi_items_share_one_counter(wsgi_example: WsgiExample) -> None:
    client = wsgi_example.client
    responses = [client.get(f"/items/{1 + n % 2}") for n in range(10)]
    responses += [client.get("/items/1"), client.get("/items/2")]
    check_items(responses)


def test_wsgi_health_is_exempt(wsgi_example: WsgiExample) -> None:
    client = wsgi_example.client
    check_health([client.get("/health") for _ in range(70)], client.get("/"))


def test_wsgi_allowed_responses_carry_quota_headers(wsgi_example: WsgiExample) -> None:
    client = wsgi_example.client
    assert_quota_headers(client.get("/"), "default", 60, 59)
    assert_quota_headers(client.post("/login"), "/login", 5, 4)
    assert_quota_headers(client.get("/items/7"), "/items/{id}", 10, 9)
    assert_quota_headers(client.get("/"), "default", 60, 58)


def test_wsgi_decision_reaches_the_handler(wsgi_example: WsgiExample) -> None:
    check_decision(wsgi_example.client.get("/items/1"), wsgi_example.client.get("/items/2"))


def test_wsgi_clients_are_counted_apart(wsgi_example: WsgiExample) -> None:
    check_login([wsgi_example.client.post("/login") for _ in range(6)])
    assert_quota_headers(wsgi_example.other.post("/login"), "/login", 5, 4)


def test_wsgi_home_page_lists_what_to_try(wsgi_example: WsgiExample) -> None:
    response = wsgi_example.client.get("/")
    assert response.headers["content-type"].startswith("text/plain")
    assert f"-X POST {BASE_URL}/login" in response.text
    assert f"curl -i {BASE_URL}/health" in response.text


# --- what only the Starlette and FastAPI examples have ----------------------------------

STARLETTE_LIKE = ["starlette", "fastapi"]


@pytest.fixture(params=STARLETTE_LIKE)
async def starlette_like(
    request: pytest.FixtureRequest, storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AsgiExample]:
    async with serve_asgi(ASGI_EXAMPLES[request.param](storage_url, monkeypatch)) as example:
        yield example


async def test_stream_is_served_whole_with_quota_headers(starlette_like: AsgiExample) -> None:
    chunks: list[bytes] = []
    async with starlette_like.client.stream("GET", "/stream") as response:
        assert_quota_headers(response, "default", 60, 59)
        chunks = [chunk async for chunk in response.aiter_raw()]
    assert b"".join(chunks) == b"chunk 1\nchunk 2\nchunk 3\n"


async def websocket_session(app: RateLimitMiddleware, *,
                            http_response: bool = False) -> list[dict[str, Any]]:
    """One websocket connection to /ws that sends "hi"; the messages the app sent back.

    *http_response* offers the ``websocket.http.response`` extension, with which a
    refused handshake can be answered by an HTTP response instead of a bare close.
    """
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in ({"type": "websocket.connect"},
                    {"type": "websocket.receive", "text": "hi"},
                    {"type": "websocket.disconnect", "code": 1000}):
        inbox.put_nowait(message)
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "scheme": "ws", "path": "/ws", "raw_path": b"/ws", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"testserver")],
        "client": (CLIENT_IP, 1234), "server": ("testserver", 80), "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if http_response else {},
    }
    await asyncio.wait_for(app(scope, inbox.get, send), 5)
    return sent


async def test_websocket_echoes_and_counts_against_the_default(
    starlette_like: AsgiExample,
) -> None:
    app, client = starlette_like.app, starlette_like.client
    accept, echo, close = await websocket_session(app)
    assert accept["type"] == "websocket.accept"
    headers = {name.decode(): value.decode() for name, value in accept["headers"]}
    assert sf_list(headers["ratelimit-policy"]) == [("default", {"q": 60, "w": 60})]
    assert headers["x-ratelimit-remaining"] == "59"
    assert echo == {"type": "websocket.send", "text": "echo: hi"}
    assert close["type"] == "websocket.close"

    # / and /ws draw on one default budget: 58 pages, then one more handshake fits.
    for remaining in range(58, 0, -1):
        assert (await client.get("/")).headers["x-ratelimit-remaining"] == str(remaining)
    assert (await websocket_session(app))[0]["type"] == "websocket.accept"

    # The budget is spent: the handshake is refused before the handler runs.
    assert await websocket_session(app) == [
        {"type": "websocket.close", "code": 1008, "reason": "rate limit exceeded"}]
    start, body = await websocket_session(app, http_response=True)
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 429
    refused = {name.decode(): value.decode() for name, value in start["headers"]}
    assert refused["content-type"] == "application/problem+json"
    assert 1 <= int(refused["retry-after"]) <= 60
    assert body["type"] == "websocket.http.response.body"
    assert b'"violated-policies":["default"]' in body["body"]


@contextlib.asynccontextmanager
async def lifespan(app: RateLimitMiddleware) -> AsyncIterator[None]:
    """Run *app*'s lifespan, as a server would: startup, the body, shutdown."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(message: Any) -> None:
        await outbox.put(dict(message))

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                    "state": {}}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbox.get(), 5))["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(outbox.get(), 5))["type"] == "lifespan.shutdown.complete"
        await asyncio.wait_for(task, 5)


def client_ids(client: redis.Redis) -> set[str]:
    return {entry["id"] for entry in client.client_list()}


@pytest.mark.redis
@pytest.mark.parametrize("name", STARLETTE_LIKE)
async def test_lifespan_shutdown_closes_the_redis_connections(
    name: str, redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = client_ids(redis_client)
    app = ASGI_EXAMPLES[name](redis_url, monkeypatch)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1234))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            assert_quota_headers(await client.get("/items/1"), "/items/{id}", 10, 9)
        ours = client_ids(redis_client) - before
        assert ours, "the example should have opened a Redis connection"
    for _ in range(250):  # the server notices closed sockets shortly after, not at once
        if not ours & client_ids(redis_client):
            break
        await asyncio.sleep(0.02)
    assert not ours & client_ids(redis_client), "lifespan shutdown left connections open"


# --- the FastAPI example's API-key rule -------------------------------------------------


@pytest.fixture
async def fastapi_example(
    storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[AsgiExample]:
    async with serve_asgi(ASGI_EXAMPLES["fastapi"](storage_url, monkeypatch)) as example:
        yield example


async def test_fastapi_an_api_key_is_one_budget_wherever_it_comes_from(
    fastapi_example: AsgiExample,
) -> None:
    alice = {"X-API-Key": "alice-secret"}
    clients = (fastapi_example.client, fastapi_example.other)
    responses = [await clients[n % 2].get("/api/search", params={"q": "x"}, headers=alice)
                 for n in range(20)]
    assert [r.json()["ratelimit"]["remaining"] for r in responses] == list(range(19, -1, -1))
    assert {r.json()["counted_as"] for r in responses} == {"key"}
    assert_refused(await fastapi_example.other.get("/api/search", params={"q": "x"},
                                                   headers=alice), "/api/{rest:path}", 20)
    # Another key has its own budget, from the very same address.
    bob = await fastapi_example.client.get("/api/search", params={"q": "x"},
                                           headers={"X-API-Key": "bob-secret"})
    assert_quota_headers(bob, "/api/{rest:path}", 20, 19)
    # Without a key the caller is counted by address: not alice's budget either.
    anonymous = await fastapi_example.client.get("/api/search", params={"q": "x"})
    assert_quota_headers(anonymous, "/api/{rest:path}", 20, 19)
    assert anonymous.json()["counted_as"] == "ip"


@pytest.mark.redis
async def test_fastapi_api_keys_are_not_stored_in_clear(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = ASGI_EXAMPLES["fastapi"](redis_url, monkeypatch)
    transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 1234))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            response = await client.get("/api/search", params={"q": "x"},
                                        headers={"X-API-Key": "alice-secret"})
            assert_quota_headers(response, "/api/{rest:path}", 20, 19)
    finally:
        await app.limiter.aclose()
    stored = [key.decode() if isinstance(key, bytes) else key for key in redis_client.keys("*")]
    assert any("key:" in key for key in stored), stored
    assert not [key for key in stored if "alice" in key], stored


# --- the runnable examples, as real servers ---------------------------------------------


@dataclass
class Server:
    """A command that serves an example on a port, and where it runs."""

    argv: list[str]
    cwd: Path
    prints_usage: bool  # whether it prints the curl commands on start-up


SERVERS: dict[str, Callable[[int], Server]] = {
    "starlette": lambda port: Server(
        [sys.executable, str(EXAMPLES / "starlette_app.py"), "--port", str(port)], ROOT, True),
    "fastapi": lambda port: Server(
        [sys.executable, str(EXAMPLES / "fastapi_app.py"), "--port", str(port)], ROOT, True),
    "flask": lambda port: Server(
        [sys.executable, str(EXAMPLES / "flask_app.py"), "--port", str(port)], ROOT, True),
    "django": lambda port: Server(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        DJANGO_DIR, False),
}


def wait_until_serving(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not answer within 15 s:\n{log.read_text()}")
        time.sleep(0.1)


@pytest.mark.parametrize("name", list(SERVERS))
def test_example_serves_over_tcp(name: str, tmp_path: Path) -> None:
    port = free_port()
    server = SERVERS[name](port)
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}  # memory storage, as a demo
    env["PYTHONUNBUFFERED"] = "1"
    log = tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(server.argv, cwd=server.cwd, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        wait_until_serving(base, process, log)
        with httpx.Client(base_url=base, timeout=5) as client:
            check_login([client.post("/login") for _ in range(6)])
            assert_quota_headers(client.get("/items/1"), "/items/{id}", 10, 9)
            home = client.get("/")
            assert f"-X POST {base}/login" in home.text
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    if server.prints_usage:
        assert f"-X POST {base}/login" in log.read_text()
