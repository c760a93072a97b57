"""The real servers x frameworks matrix: what runs, how it is started, and the checks.

Every example in examples/ (Starlette, FastAPI, Litestar, Django under ASGI; Flask,
Django under WSGI) is served by real servers (uvicorn, hypercorn, granian; gunicorn,
waitress) on 127.0.0.1, one worker each, and asked through real HTTP with httpx and a
websocket client built on wsproto (a sans-I/O library hypercorn already depends on, and
the websocket implementation uvicorn is started with here).

The examples share their routes and limits: ``POST /login`` 5/minute, ``/items/{id}``
10/minute (one counter for every id), ``/health`` exempt, everything else (``/``,
``/stream``, the ``/ws`` handshake) on a 60/minute default, all keyed by the client's
address. Each check sends from an address of its own in 127.0.0.0/8 (Linux routes the
whole block to the loopback interface), so no check spends another's budget and the
checks hold in any order.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import http_sf
import httpx
import redis
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from tests.integration.realservers import ROOT, Server

EXAMPLES = ROOT / "examples"
DJANGO_DIR = EXAMPLES / "django"
HOST = "127.0.0.1"

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
PROBLEM_JSON = "application/problem+json"
QUOTA_HEADERS = ("ratelimit-policy", "ratelimit", "x-ratelimit-limit",
                 "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after")
STREAM_BODY = b"chunk 1\nchunk 2\nchunk 3\n"
#: The examples sleep 0.1 s after each of their 3 chunks: the first must arrive at least
#: this long before the stream ends, or something held the body back.
FIRST_PART_LEAD = 0.15

# One client address per check (see the module docstring).
LIMITING_IP = "127.0.0.2"
HEADERS_IP = "127.0.0.3"
PROBLEM_IP = "127.0.0.4"
STREAM_IP = "127.0.0.5"
WEBSOCKET_IP = "127.0.0.6"
OTHER_IP = "127.0.0.7"


# --- what is served, and by what ---------------------------------------------------------


@dataclass(frozen=True)
class App:
    """An example: the ``module:attribute`` a server imports, from which directory."""

    name: str
    target: str
    directory: Path


ASGI_APPS = [
    App("starlette", "starlette_app:app", EXAMPLES),
    App("fastapi", "fastapi_app:app", EXAMPLES),
    App("litestar", "litestar_app:app", EXAMPLES),
    App("django-asgi", "demo_site.asgi:application", DJANGO_DIR),
]
WSGI_APPS = [
    App("flask", "flask_app:app", EXAMPLES),
    App("django-wsgi", "demo_site.wsgi:application", DJANGO_DIR),
]


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


#: server -> (target, port) -> the command line serving *target* on 127.0.0.1:port.
SERVERS: dict[str, Callable[[str, int], list[str]]] = {
    # uvicorn speaks websockets through `websockets` or `wsproto`, whichever "auto" finds
    # first (with neither, a handshake is served as a plain GET). Named here, so the
    # matrix does not change with what is installed: wsproto comes with hypercorn.
    "uvicorn": lambda target, port: _python(
        "uvicorn", target, "--host", HOST, "--port", str(port), "--ws", "wsproto",
        "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "2"),
    "hypercorn": lambda target, port: _python(
        "hypercorn", "--bind", f"{HOST}:{port}", "--workers", "1", "--log-level", "warning",
        "--graceful-timeout", "2", target),
    "granian": lambda target, port: _python(
        "granian", "--interface", "asgi", "--host", HOST, "--port", str(port),
        "--workers", "1", "--log-level", "warning", "--no-access-log", target),
    "gunicorn": lambda target, port: _python(
        "gunicorn", target, "--bind", f"{HOST}:{port}", "--workers", "1",
        "--worker-class", "sync", "--log-level", "warning", "--error-logfile", "-",
        "--graceful-timeout", "2"),
    "waitress": lambda target, port: _python(
        "waitress", f"--listen={HOST}:{port}", target),
}
ASGI_SERVERS = ["uvicorn", "hypercorn", "granian"]
WSGI_SERVERS = ["gunicorn", "waitress"]


@dataclass(frozen=True)
class Combo:
    """One cell of the matrix: a server, an example, and the storage its env selects."""

    server: str
    app: App
    storage: str = "memory"  # or "redis": REDIS_URL set, which the examples read

    @property
    def id(self) -> str:
        suffix = "-redis" if self.storage == "redis" else ""
        return f"{self.server}-{self.app.name}{suffix}"

    def argv(self, port: int) -> list[str]:
        return SERVERS[self.server](self.app.target, port)

    def env(self, redis_url: str | None = None) -> dict[str, str]:
        """Ours, without anything pointing at a Redis or a Django project, plus the
        example's directory on the path and, for a Redis cell, REDIS_URL."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.app.directory), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        if self.storage == "redis":
            assert redis_url is not None
            env["REDIS_URL"] = redis_url
        return env


ASGI_COMBOS = [Combo(server, app) for server in ASGI_SERVERS for app in ASGI_APPS]
WSGI_COMBOS = [Combo(server, app) for server in WSGI_SERVERS for app in WSGI_APPS]
#: One cell per kind on a real Redis, chosen through the environment as in production.
ASGI_REDIS_COMBO = Combo("hypercorn", ASGI_APPS[1], "redis")  # FastAPI
WSGI_REDIS_COMBO = Combo("waitress", WSGI_APPS[0], "redis")  # Flask, on threads

#: Whether the server puts the ``headers`` of ``websocket.accept`` (ASGI 2.1) in its 101
#: response. Granian (2.8) drops them: an accepted handshake is counted (the tests see it
#: in the next response's remaining quota) but its 101 carries no quota headers.
WEBSOCKET_ACCEPT_HEADERS = {"uvicorn": True, "hypercorn": True, "granian": False}


@dataclass
class Served:
    """A running cell: the server (its port and log), and the Redis it counts in (if any)."""

    combo: Combo
    server: Server
    redis_url: str | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def client(self, source: str) -> httpx.Client:
        """An HTTP client whose connections come from *source* (a loopback address)."""
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.server.base, transport=transport, timeout=10)

    def output(self) -> str:
        """The end of the server's log, for failure messages."""
        return self.server.output()


def check_loopback_block() -> None:
    """Fail loudly where 127.0.0.2 and up are not loopback addresses (macOS by default:
    ``sudo ifconfig lo0 alias 127.0.0.2`` and so on for each address used here)."""
    for address in (LIMITING_IP, HEADERS_IP, PROBLEM_IP, STREAM_IP, WEBSOCKET_IP, OTHER_IP):
        try:
            with socket.socket() as sock:
                sock.bind((address, 0))
        except OSError as exc:
            raise RuntimeError(f"the e2e matrix sends from {address}, which this host "
                               f"cannot bind ({exc}): it needs 127.0.0.0/8 on loopback") from exc


# --- checks on responses ----------------------------------------------------------------


def sf_list(value: str) -> list[tuple[Any, dict[str, Any]]]:
    """An RFC 9651 list field, parsed by a third-party parser (not the package's own)."""
    return cast("list[tuple[Any, dict[str, Any]]]", http_sf.parse(value.encode(),
                                                                  tltype="list"))


@dataclass(frozen=True)
class Quota:
    """The quota headers of one response with one policy in force, parsed and
    checked against each other."""

    policy: str
    limit: int
    window: int
    remaining: int
    delay: int  # RateLimit's t: seconds until the window resets
    reset: int  # X-RateLimit-Reset: the same moment, as epoch seconds
    retry_after: int | None


def quota_of(headers: Mapping[str, str]) -> Quota:
    """Parse the draft and legacy headers and check they tell one story."""
    [(policy, params)] = sf_list(headers["ratelimit-policy"])
    [(name, current)] = sf_list(headers["ratelimit"])
    assert name == policy, (headers["ratelimit-policy"], headers["ratelimit"])
    assert set(params) == {"q", "w"}, params
    assert set(current) == {"r", "t"}, current
    limit, window, remaining, delay = params["q"], params["w"], current["r"], current["t"]
    assert all(isinstance(n, int) for n in (limit, window, remaining, delay)), headers
    assert 0 <= remaining <= limit
    assert 0 <= delay <= window
    # The legacy trio: the same limit and remaining, and the same reset moment.
    assert headers["x-ratelimit-limit"] == str(limit)
    assert headers["x-ratelimit-remaining"] == str(remaining)
    reset = int(headers["x-ratelimit-reset"])
    assert abs(reset - (time.time() + delay)) <= 2, (reset, delay, time.time())
    retry = headers.get("retry-after")
    return Quota(policy, limit, window, remaining, delay, reset,
                 None if retry is None else int(retry))


def assert_allowed(response: httpx.Response, policy: str, limit: int,
                   remaining: int) -> Quota:
    """A 2xx with the quota headers of one 60 s *policy*, *remaining* left, no Retry-After."""
    assert 200 <= response.status_code < 300, (response.status_code, response.text)
    quota = quota_of(response.headers)
    assert (quota.policy, quota.limit, quota.window, quota.remaining) == (
        policy, limit, 60, remaining), response.headers
    assert quota.retry_after is None, response.headers
    return quota


def assert_refused(response: httpx.Response, policy: str, limit: int) -> dict[str, Any]:
    """A 429 from the middleware: quota 0, a sane Retry-After, an RFC 9457 problem body
    naming *policy*. Returns the body."""
    assert response.status_code == 429, (response.status_code, response.text)
    quota = quota_of(response.headers)
    assert (quota.policy, quota.limit, quota.window, quota.remaining) == (policy, limit, 60, 0)
    # delay-seconds: a positive integer, no later than the window's end and no sooner
    # than the reset the other headers announce.
    assert response.headers["retry-after"].isdigit(), response.headers["retry-after"]
    assert quota.retry_after is not None
    assert 1 <= quota.retry_after <= 60
    assert quota.retry_after >= quota.delay - 1, quota
    return assert_problem(response.headers, response.content, policy)


def assert_problem(headers: Mapping[str, str], content: bytes, policy: str) -> dict[str, Any]:
    """An ``application/problem+json`` 429 body (RFC 9457) naming *policy*."""
    assert headers["content-type"] == PROBLEM_JSON, headers
    assert int(headers["content-length"]) == len(content), headers
    body = cast("dict[str, Any]", httpx.Response(200, content=content).json())
    assert body["type"] == QUOTA_EXCEEDED
    assert body["status"] == 429
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["violated-policies"] == [policy]
    return body


def has_no_quota_headers(headers: Mapping[str, str]) -> bool:
    return not [name for name in QUOTA_HEADERS if name in headers]


@dataclass
class Streamed:
    """A streamed response: its head, and each part of its body with when it arrived."""

    response: httpx.Response
    parts: list[tuple[float, bytes]]
    ended: float

    @property
    def body(self) -> bytes:
        return b"".join(part for _, part in self.parts)


def stream(client: httpx.Client, path: str) -> Streamed:
    """GET *path*, reading the body part by part as the network delivers it."""
    with client.stream("GET", path) as response:
        parts = [(time.monotonic(), part) for part in response.iter_raw() if part]
        ended = time.monotonic()
    return Streamed(response, parts, ended)


# --- websockets -------------------------------------------------------------------------


@dataclass
class Handshake:
    """How a websocket handshake went: 101 and what the session carried, or a refusal
    (its status, headers and body)."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    received: list[str] = field(default_factory=list)
    close_code: int | None = None


def websocket_echo(port: int, source: str, text: str = "hi", path: str = "/ws",
                   timeout: float = 10, count: int = 1) -> Handshake:
    """Open a websocket to *path* from *source*; if accepted, send *text* *count* times
    at once, collect what the server sends until it closes, and answer the close."""
    connection = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection((HOST, port), timeout=timeout,
                                  source_address=(source, 0)) as sock:
        sock.sendall(connection.send(Request(host=f"{HOST}:{port}", target=path)))
        handshake: Handshake | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            connection.receive_data(data or None)
            for event in connection.events():
                handshake = _on_event(event, handshake, connection, sock, text, count)
                if handshake is not None and _finished(event):
                    return handshake
            if not data:
                break
    raise AssertionError(f"the websocket session on port {port} ended early: {handshake}")


def _headers(raw: Any) -> dict[str, str]:
    return {bytes(name).decode().lower(): bytes(value).decode() for name, value in raw}


def _on_event(event: Event, handshake: Handshake | None, connection: WSConnection,
              sock: socket.socket, text: str, count: int = 1) -> Handshake | None:
    if isinstance(event, AcceptConnection):
        sock.sendall(b"".join(connection.send(TextMessage(data=text)) for _ in range(count)))
        return Handshake(101, _headers(event.extra_headers))
    if isinstance(event, RejectConnection):
        return Handshake(event.status_code, _headers(event.headers))
    assert handshake is not None, event
    if isinstance(event, RejectData):
        handshake.body += event.data
    elif isinstance(event, TextMessage):
        handshake.received.append(event.data)
    elif isinstance(event, CloseConnection):
        handshake.close_code = event.code
        sock.sendall(connection.send(event.response()))
    return handshake


def _finished(event: Event) -> bool:
    return (isinstance(event, CloseConnection)
            or (isinstance(event, RejectConnection) and not event.has_body)
            or (isinstance(event, RejectData) and event.body_finished))


def spend(client: httpx.Client, path: str, count: int, policy: str, limit: int,
          first_remaining: int) -> None:
    """*count* allowed GETs of *path*, remaining counting down from *first_remaining*."""
    for n in range(count):
        assert_allowed(client.get(path), policy, limit, first_remaining - n)


# --- the checks every cell passes, ASGI or WSGI -----------------------------------------


def check_limiting(served: Served) -> None:
    """POST /login: exactly 5 successes, then 429s; another client keeps its own budget."""
    with served.client(LIMITING_IP) as client:
        statuses = [client.post("/login").status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2, (statuses, served.output())
    with served.client(OTHER_IP) as other:
        assert_allowed(other.post("/login"), "/login", 5, 4)
    check_redis_counters(served, "/login", LIMITING_IP)


def check_headers(served: Served) -> None:
    """/items/<id>: the quota headers count down across ids on one window, the handler
    sees the same numbers, the refusals carry Retry-After; /health carries none."""
    with served.client(HEADERS_IP) as client:
        quotas = []
        for n in range(10):
            response = client.get(f"/items/{1 + n % 2}")
            quotas.append(assert_allowed(response, "/items/{id}", 10, 9 - n))
            assert response.json()["ratelimit"] == {
                "allowed": True, "rule": "/items/{id}", "limit": 10, "remaining": 9 - n}
        # One fixed window: the reset moment does not move (the draft's t counts down).
        assert max(q.reset for q in quotas) - min(q.reset for q in quotas) <= 1, quotas
        assert [q.delay for q in quotas] == sorted((q.delay for q in quotas), reverse=True)
        for path in ("/items/1", "/items/2"):
            refused = client.get(path)
            assert_refused(refused, "/items/{id}", 10)
            assert abs(quota_of(refused.headers).reset - quotas[0].reset) <= 1
        health = client.get("/health")
        assert health.status_code == 200
        assert has_no_quota_headers(health.headers), health.headers


def check_problem(served: Served) -> None:
    """The 6th POST /login: a complete RFC 9457 problem, nothing of the app's."""
    with served.client(PROBLEM_IP) as client:
        for remaining in range(4, -1, -1):
            assert_allowed(client.post("/login"), "/login", 5, remaining)
        refused = client.post("/login")
    body = assert_refused(refused, "/login", 5)
    assert set(body) == {"type", "title", "status", "detail", "violated-policies"}, body


def check_streaming(served: Served) -> None:
    """GET /stream: the quota headers come with the head, the body arrives whole, in
    several parts (chunked), the first one well before the end: nothing buffered it."""
    with served.client(STREAM_IP) as client:
        streamed = stream(client, "/stream")
    response = streamed.response
    assert_allowed(response, "default", 60, 59)
    assert response.headers.get("transfer-encoding") == "chunked", response.headers
    assert "content-length" not in response.headers
    assert streamed.body == STREAM_BODY
    assert len(streamed.parts) >= 2, streamed.parts
    first = streamed.parts[0][0]
    assert streamed.ended - first >= FIRST_PART_LEAD, (
        f"the first part arrived {streamed.ended - first:.3f}s before the end of the "
        f"stream: the body was held back", streamed.parts)


def check_redis_counters(served: Served, rule: str, address: str) -> None:
    """In a Redis cell, the counters of *rule* for *address* are in the Redis that
    REDIS_URL names (the examples pass storage=None: $REDIS_URL, else memory)."""
    if served.redis_url is None:  # a memory cell: REDIS_URL unset, nothing to look at
        return
    with redis.Redis.from_url(served.redis_url) as client:
        found = [key.decode() for key in client.scan_iter(match=f"*{address}*")]
    # The rule's name is percent-encoded in the key: rl/{%2Flogin/ip:127.0.0.2}/5/1/minute
    assert [key for key in found if quote(rule, safe="") in key], (rule, address, found)
