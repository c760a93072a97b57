"""Starlette, FastAPI, Litestar and Django (ASGI) behind the middleware, under uvicorn,
hypercorn and granian.

Each test runs once per cell (see ``asgi_server`` in conftest.py); the HTTP checks are
in :mod:`tests.e2e.matrix`, shared with the WSGI servers.
"""

from __future__ import annotations

from tests.e2e.matrix import (
    WEBSOCKET_ACCEPT_HEADERS,
    WEBSOCKET_IP,
    Served,
    assert_problem,
    assert_refused,
    check_headers,
    check_limiting,
    check_problem,
    check_redis_counters,
    check_streaming,
    has_no_quota_headers,
    quota_of,
    spend,
    websocket_echo,
)


def test_limiting(asgi_server: Served) -> None:
    check_limiting(asgi_server)


def test_headers(asgi_server: Served) -> None:
    check_headers(asgi_server)


def test_problem_body(asgi_server: Served) -> None:
    check_problem(asgi_server)


def test_streaming(asgi_server: Served) -> None:
    check_streaming(asgi_server)


def test_websocket(asgi_server: Served) -> None:
    """/ws echoes, its handshakes draw on the default budget with / (60/minute), and
    once that is spent the handshake is refused before the app sees it."""
    port, server = asgi_server.port, asgi_server.combo.server
    first = websocket_echo(port, WEBSOCKET_IP)
    assert first.status == 101, (first, asgi_server.output())
    assert first.received == ["echo: hi"]
    assert first.close_code == 1000
    # The middleware adds the quota headers to websocket.accept, for the 101 to carry.
    if WEBSOCKET_ACCEPT_HEADERS[server]:
        quota = quota_of(first.headers)
        assert (quota.policy, quota.limit, quota.window, quota.remaining) == (
            "default", 60, 60, 59), first.headers
    else:  # the server drops them (see WEBSOCKET_ACCEPT_HEADERS): say so if that changes
        assert has_no_quota_headers(first.headers), first.headers

    with asgi_server.client(WEBSOCKET_IP) as client:
        # 58 left: the handshake was counted, whatever its 101 said.
        spend(client, "/", 58, "default", 60, 58)
        last = websocket_echo(port, WEBSOCKET_IP)
        assert (last.status, last.received) == (101, ["echo: hi"]), last
        if WEBSOCKET_ACCEPT_HEADERS[server]:
            assert quota_of(last.headers).remaining == 0

        # All three servers offer the websocket.http.response extension, so the refusal
        # is the same 429 as over HTTP. (Without it the middleware closes with 1008
        # before accepting, which a server turns into a 403: test_examples covers that.)
        refused = websocket_echo(port, WEBSOCKET_IP)
        assert refused.status == 429, refused
        assert refused.received == []
        quota = quota_of(refused.headers)
        assert (quota.policy, quota.remaining) == ("default", 0), refused.headers
        assert quota.retry_after is not None
        assert 1 <= quota.retry_after <= 60
        assert_problem(refused.headers, refused.body, "default")
        # / shares that budget: spent for plain requests as well.
        assert_refused(client.get("/"), "default", 60)
    check_redis_counters(asgi_server, "default", WEBSOCKET_IP)
