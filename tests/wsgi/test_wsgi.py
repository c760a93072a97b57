"""The WSGI middleware: PEP 3333 conformance (wsgiref.validate) and Flask through httpx."""

from __future__ import annotations

import io
import json
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import http_sf
import httpx

from ratelimit_mw import Rule, WSGIRateLimitMiddleware, keys
from ratelimit_mw._types import Environ, StartResponse
from tests.apps import flask_app
from tests.helpers import closed_port_url


def environ(path: str = "/", method: str = "GET", peer: str = "203.0.113.7",
            **extra: str) -> Environ:
    env: Environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "REMOTE_ADDR": peer,
                    "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
                    "QUERY_STRING": "", "SCRIPT_NAME": ""}
    setup_testing_defaults(env)
    env.update(extra)
    return env


class ClosingBody:
    """An app iterable that records close(), as PEP 3333 demands it be called."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield b"hello "
        yield b"world"

    def close(self) -> None:
        self.closed = True


bodies: list[ClosingBody] = []


def plain_app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    body = ClosingBody()
    bodies.append(body)
    return body


def call(app: Any, env: Environ) -> tuple[str, list[tuple[str, str]], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        captured["status"], captured["headers"] = status, headers
        return lambda data: None

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # wsgiref.validate reports problems as warnings
        result = app(env, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    return captured["status"], captured["headers"], body


def wrapped(app: Any = plain_app, **options: Any) -> Any:
    options.setdefault("storage", "memory://")
    options.setdefault("default_limits", "2/minute")
    # The validator on both sides checks what we receive and what we hand on.
    return validator(WSGIRateLimitMiddleware(validator(app), **options))


def test_validates_and_adds_headers_and_keeps_close() -> None:
    bodies.clear()
    status, headers, body = call(wrapped(), environ())
    assert status == "200 OK"
    assert body == b"hello world"
    names = [name for name, _ in headers]
    assert names[0] == "Content-Type"
    assert names.count("RateLimit-Policy") == 1
    assert "X-RateLimit-Reset" in names
    assert bodies[-1].closed is True


def test_refusal_is_problem_json_and_validates() -> None:
    app = wrapped()
    call(app, environ())
    call(app, environ())
    status, headers, body = call(app, environ())
    header = dict(headers)
    assert status == "429 Too Many Requests"
    assert header["Content-Type"] == "application/problem+json"
    assert int(header["Retry-After"]) >= 1
    assert json.loads(body)["violated-policies"] == ["default"]
    assert int(header["Content-Length"]) == len(body)


def test_exc_info_and_write_are_passed_on() -> None:
    seen: dict[str, Any] = {}

    def app(env: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"early ")
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"late"]

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Any:
        seen.setdefault("calls", []).append((status, exc_info))
        return lambda data: seen.setdefault("written", []).append(data)

    mw = WSGIRateLimitMiddleware(app, storage="memory://", default_limits="5/minute")
    body = list(mw(environ(), start_response))
    assert body == [b"late"]
    assert seen["written"] == [b"early "]
    assert seen["calls"][0][1] is None
    assert seen["calls"][1][1][0] is ValueError  # exc_info reached the server


def test_exempt_and_unlimited_requests_untouched() -> None:
    app = wrapped(rules=[Rule("/health", exempt=True)], default_limits=None)
    for _ in range(4):
        status, headers, _ = call(app, environ("/health"))
        assert status == "200 OK"
        assert not any(n.startswith(("RateLimit", "X-RateLimit")) for n, _ in headers)
    _, headers, _ = call(app, environ("/other"))  # no default limits: nothing to count
    assert not any(n.startswith("RateLimit") for n, _ in headers)


def test_utf8_path_and_latin1_environ() -> None:
    app = wrapped(rules=[Rule("/café", "1/minute")], default_limits=None)
    path = "/café".encode().decode("latin-1")  # how PEP 3333 servers carry it
    assert call(app, environ(path))[0] == "200 OK"
    assert call(app, environ(path + "/"))[0] == "429 Too Many Requests"


def test_storage_down_never_500() -> None:
    for policy, expected in (("allow", "200 OK"), ("deny", "503 Service Unavailable")):
        app = wrapped(storage=closed_port_url(), on_storage_error=policy)
        status, _headers, body = call(app, environ())
        assert status == expected
        if policy == "deny":
            assert json.loads(body)["status"] == 503


# -- Flask, through httpx.WSGITransport, memory and Redis ---------------------------------

@contextmanager
def flask_client(storage: str, peer: str = "203.0.113.7",
                 **options: Any) -> Iterator[httpx.Client]:
    app = flask_app()
    options.setdefault("rules", [Rule("/login", "5/minute", methods=["POST"]),
                                 Rule("/items/{id}", "10/minute")])
    middleware = WSGIRateLimitMiddleware(app.wsgi_app, storage=storage,
                                         default_limits="100/minute", **options)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app, remote_addr=peer),
                          base_url="http://testserver") as client:
            yield client
    finally:
        # The Flask app is a reference cycle: left to the collector, a Redis socket could
        # be finalized before the connection that closes it (a stray ResourceWarning).
        middleware.limiter.close()


def test_flask_sixth_login_429(storage_url: str, strategy: str) -> None:
    with flask_client(storage_url, strategy=strategy) as c:
        codes = [c.post("/login").status_code for _ in range(6)]
        last = c.post("/login")
    assert codes == [200] * 5 + [429]
    assert last.status_code == 429
    assert int(last.headers["Retry-After"]) >= 1
    assert last.json()["violated-policies"] == ["/login"]


def test_flask_items_share_counter_and_headers_parse(storage_url: str) -> None:
    with flask_client(storage_url) as c:
        responses = [c.get(f"/items/{i}") for i in range(11)]
    assert [r.status_code for r in responses] == [200] * 10 + [429]
    policy = http_sf.parse(responses[0].headers["RateLimit-Policy"].encode(), tltype="list")
    assert [(n, p["q"], p["w"]) for n, p in policy] == [("/items/{id}", 10, 60)]


def test_flask_decision_in_environ(storage_url: str) -> None:
    with flask_client(storage_url) as c:
        assert c.get("/whoami").json() == {"rule": "default", "remaining": 99}


def test_flask_spoofed_xff_ignored(storage_url: str) -> None:
    with flask_client(storage_url, key=keys.client_ip(trusted_hops=1),
                      peer="203.0.113.9") as c:
        # trusted_hops=1: the last X-Forwarded-For entry is the client. Without the
        # header the peer counts; spoofing further left changes nothing.
        codes = [c.post("/login", headers={"X-Forwarded-For": f"1.1.1.{i}, 198.51.100.1"}
                        ).status_code for i in range(6)]
    assert codes == [200] * 5 + [429]
