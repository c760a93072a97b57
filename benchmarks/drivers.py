"""Call an app in-process: a hand-built ASGI scope or WSGI environ, no HTTP client.

Every variant goes through the same loop, so what differs between two timings is the app.
Each request gets a fresh copy of the scope / environ (frameworks write into them).
"""

from __future__ import annotations

import io
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

from .apps import ITEM_PATH

__all__ = ["Response", "asgi_request", "asgi_scope", "run_asgi", "run_wsgi",
           "wsgi_environ", "wsgi_request"]

CLIENT = ("127.0.0.1", 50123)
SERVER = ("127.0.0.1", 8000)


def asgi_scope(path: str = ITEM_PATH) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"ratelimit-mw-bench"),
                    (b"accept", b"*/*")],
        "client": CLIENT,
        "server": SERVER,
    }


def wsgi_environ(path: str = ITEM_PATH) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": SERVER[0],
        "SERVER_PORT": str(SERVER[1]),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": CLIENT[0],
        "REMOTE_PORT": str(CLIENT[1]),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "ratelimit-mw-bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


class Response:
    """One response as the driver saw it: status, lower-cased headers, body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers!r}, {self.body[:80]!r})"


# --------------------------------------------------------------------------- ASGI


class _Receive:
    """The request body once, then ``http.disconnect`` (as a server does after the end)."""

    __slots__ = ("_sent",)

    def __init__(self) -> None:
        self._sent = False

    async def __call__(self) -> dict[str, Any]:
        if self._sent:
            return {"type": "http.disconnect"}
        self._sent = True
        return {"type": "http.request", "body": b"", "more_body": False}


async def run_asgi(app: Callable[..., Any], n: int, statuses: Counter[int],
                   template: dict[str, Any] | None = None) -> None:
    """*n* sequential requests through *app*; counts the response statuses."""
    scope = template or asgi_scope()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    for _ in range(n):
        await app(dict(scope), _Receive(), send)


async def asgi_request(app: Callable[..., Any], path: str = ITEM_PATH) -> Response:
    """One request, with everything the app sent."""
    start: dict[str, Any] = {}
    body = bytearray()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(asgi_scope(path), _Receive(), send)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1")
               for k, v in start.get("headers", ())}
    return Response(int(start.get("status", 0)), headers, bytes(body))


# --------------------------------------------------------------------------- WSGI


def run_wsgi(app: Callable[..., Any], n: int, statuses: Counter[int],
             template: dict[str, Any] | None = None) -> None:
    """*n* sequential requests through *app*; counts the response statuses."""
    environ = template or wsgi_environ()

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        statuses[int(status[:3])] += 1
        return _no_write

    for _ in range(n):
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(b"")
        result = app(env, start_response)
        try:
            for _chunk in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


def _no_write(data: bytes) -> None:
    raise AssertionError("the benchmark apps do not use write()")


def wsgi_request(app: Callable[..., Any], path: str = ITEM_PATH) -> Response:
    """One request, with everything the app sent."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        seen["status"] = int(status[:3])
        seen["headers"] = {k.lower(): v for k, v in headers}
        return _no_write

    env = wsgi_environ(path)
    env["wsgi.input"] = io.BytesIO(b"")
    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Response(seen["status"], seen["headers"], body)
