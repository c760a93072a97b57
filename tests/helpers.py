"""Small helpers shared by test modules (test modules import from here, never from each
other)."""

from __future__ import annotations

import socket

import httpx

from ratelimit_mw import RedisOptions, RequestInfo
from tests.redis_server import free_port

#: For tests of counting under concurrency, not of timeouts: the default 0.25 s to connect
#: can pass in a long test process, whose full garbage collections take over 0.1 s,
#: while many concurrent checks open their connections.
PATIENT = RedisOptions(socket_connect_timeout=5, socket_timeout=5)

#: Paths an application routes to ``/login``: each must normalise to it, so that none
#: escapes a rule for ``/login``.
LOGIN_VARIANTS = [
    "/login",
    "/login/",
    "/login//",
    "//login",
    "///login///",
    "/./login",
    "/login/.",
    "/././login/./",
    "/log%69n",
    "/%6c%6f%67%69%6e",
    "/%6C%6F%67%69%6E",
    "/a/../login",
    "/a/b/../../login",
    "/../login",
    "/../../../../login",
    "/%2e%2e/login",
    "/%2E%2E/login",
    "/%2e/login",
    "/a/%2e%2e/login",
    "/a%2f..%2flogin",
    "/a%2F..%2Flogin",
    "/..%2flogin",
    "/login%2f",
    "/login%2F",
    "%2flogin",
    "login",
    "/\\login",
    "\\login",
    "/a\\..\\login",
    "/a/%5c../login",
    "/login/%2e",
    "/login/x/..",
]


def closed_port_url() -> str:
    """A Redis URL on a loopback port nothing listens on: a storage that is down."""
    return f"redis://127.0.0.1:{free_port()}/0"


class WatchedPort:
    """A loopback port that records connection attempts and answers none of them.

    ``url`` is a Redis URL on it; `connections` counts the clients that connected. A
    storage that must not be contacted is pointed here: a closed port would refuse a
    connection silently, this one shows that it was tried.
    """

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.setblocking(False)
        self.url = f"redis://127.0.0.1:{self._socket.getsockname()[1]}/0"

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self._socket.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self._socket.close()


def internal(request: RequestInfo) -> bool:
    """An ``exempt_when`` predicate for the tests: the request says ``X-Internal: yes``."""
    return request.header("x-internal") == "yes"


def untouched(response: httpx.Response) -> bool:
    """The app's ``/state`` answer, passed through: no quota header, no decision."""
    return response.status_code == 200 and response.json() == {"decision": False} and not [
        name for name in response.headers if "ratelimit" in name]
