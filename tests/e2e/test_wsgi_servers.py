"""Flask and Django (WSGI) behind the middleware, under gunicorn and waitress.

Each test runs once per cell (see ``wsgi_server`` in conftest.py); the checks are in
:mod:`tests.e2e.matrix`. WSGI has no websockets: those are checked on the ASGI servers.
"""

from __future__ import annotations

from tests.e2e.matrix import (
    Served,
    check_headers,
    check_limiting,
    check_problem,
    check_streaming,
)


def test_limiting(wsgi_server: Served) -> None:
    check_limiting(wsgi_server)


def test_headers(wsgi_server: Served) -> None:
    check_headers(wsgi_server)


def test_problem_body(wsgi_server: Served) -> None:
    check_problem(wsgi_server)


def test_streaming(wsgi_server: Served) -> None:
    check_streaming(wsgi_server)
