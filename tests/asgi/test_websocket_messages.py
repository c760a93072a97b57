"""``Rule(messages=)``: what a client sends on a websocket, limited per connection.

Through a real Starlette app and its TestClient (``websocket_connect``), and at ASGI
message level where the test must see exactly what reaches the server.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ratelimit_mw import ConfigurationError, RateLimitMiddleware, Rule, limit
from ratelimit_mw._core import Policy
from ratelimit_mw._request import RequestInfo
from ratelimit_mw._types import Message, Receive, Scope, Send
from tests.asgi.test_messages import Recorder, ws_scope

with warnings.catch_warnings():
    # Starlette asks for httpx2 under its TestClient; the test dependencies pin httpx,
    # on which the client still works. Only this import is excused, not the tests.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketDenialResponse


class EchoApp:
    """A Starlette app whose ``/ws`` echoes every text and records what it received and
    how its connection ended."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.disconnect_codes: list[int] = []

        async def ws(websocket: WebSocket) -> None:
            await websocket.accept()
            try:
                while True:
                    text = await websocket.receive_text()
                    self.received.append(text)
                    await websocket.send_text(f"echo {text}")
            except WebSocketDisconnect as disconnect:
                self.disconnect_codes.append(disconnect.code)

        async def page(request: Any) -> Any:
            from starlette.responses import PlainTextResponse

            return PlainTextResponse("ok")

        self.app = Starlette(routes=[WebSocketRoute("/ws", ws), Route("/ws", page)])


def serve(rules: list[Rule], **options: Any) -> tuple[EchoApp, TestClient]:
    echo = EchoApp()
    options.setdefault("storage", "memory://")
    middleware = RateLimitMiddleware(echo.app, rules=rules, **options)
    return echo, TestClient(middleware)


def flood(client: TestClient, count: int,
          path: str = "/ws") -> tuple[list[str], int | None]:
    """Send *count* texts, then read what comes back until the connection closes:
    the echoes and the close code (``None`` when the server kept it open)."""
    echoes: list[str] = []
    with client.websocket_connect(path) as websocket:
        for index in range(count):
            websocket.send_text(str(index))
        try:
            while True:
                echoes.append(websocket.receive_text())
                if len(echoes) == count:
                    return echoes, None
        except WebSocketDisconnect as closed:
            return echoes, closed.code


def test_thirty_messages_against_five_per_second_close_with_1008() -> None:
    echo, client = serve([Rule("/ws", messages="5/second")])
    echoes, code = flood(client, 30)
    assert code == 1008
    assert echo.received == ["0", "1", "2", "3", "4"]
    assert echoes == [f"echo {i}" for i in range(5)]
    # The app's receive() saw the disconnect the middleware answers for the close.
    assert echo.disconnect_codes == [1008]


def test_a_connection_under_the_limit_is_untouched() -> None:
    echo, client = serve([Rule("/ws", messages="5/second")])
    echoes, code = flood(client, 5)
    assert code is None
    assert echoes == [f"echo {i}" for i in range(5)]
    assert echo.received == ["0", "1", "2", "3", "4"]
    assert echo.disconnect_codes == [1000]  # the client's own close, passed through


def test_each_connection_counts_for_itself() -> None:
    echo, client = serve([Rule("/ws", messages="3/minute")])
    for _ in range(2):
        echoes, code = flood(client, 3)
        assert (len(echoes), code) == (3, None)
    assert len(echo.received) == 6


def test_several_rates_each_hold() -> None:
    echo, client = serve([Rule("/ws", messages="2/second;3/minute")])
    with client.websocket_connect("/ws") as websocket:
        for text in ("a", "b"):
            websocket.send_text(text)
            assert websocket.receive_text() == f"echo {text}"
        websocket.send_text("c")  # a third within the second: over 2/second
        with pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_text()
    assert closed.value.code == 1008
    assert echo.received == ["a", "b"]

    echo, client = serve([Rule("/ws", messages="2/second;3/minute")])
    with client.websocket_connect("/ws") as websocket:
        for text in ("a", "b"):
            websocket.send_text(text)
            assert websocket.receive_text() == f"echo {text}"
        time.sleep(1.05)  # the second's window has room again, the minute's has one
        websocket.send_text("c")
        assert websocket.receive_text() == "echo c"
        websocket.send_text("d")  # a fourth within the minute: over 3/minute
        with pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_text()
    assert closed.value.code == 1008
    assert echo.received == ["a", "b", "c"]


def test_messages_limited_with_websockets_pass() -> None:
    echo, client = serve([Rule("/ws", "1/minute", messages="5/second")], websockets="pass")
    for _ in range(2):  # the handshakes are not limited: 1/minute never refuses one
        echoes, code = flood(client, 30)
        assert (len(echoes), code) == (5, 1008)
    assert len(echo.received) == 10


def test_handshake_and_messages_limited_together() -> None:
    echo, client = serve([Rule("/ws", "1/minute", messages="5/second")])
    echoes, code = flood(client, 30)
    assert (len(echoes), code) == (5, 1008)
    # The handshake refused (a 429, the TestClient has the denial extension): the
    # 1/minute is spent.
    with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/ws"):
        pass
    assert refused.value.status_code == 429
    assert len(echo.received) == 5


def test_a_messages_only_rule_leaves_handshakes_and_http_unlimited() -> None:
    echo, client = serve([Rule("/ws", messages="5/second")], default_limits="1/minute")
    for _ in range(3):
        response = client.get("/ws")
        assert response.status_code == 200
        assert "ratelimit" not in response.headers  # no plan: no default_limits either
        echoes, code = flood(client, 6)
        assert (len(echoes), code) == (5, 1008)
    assert len(echo.received) == 15


def test_a_messages_only_rule_keeps_the_global_limits() -> None:
    policy = Policy(rules=[Rule("/ws", messages="5/second")], global_limits="100/minute")
    plan = policy.plan(RequestInfo("GET", "/ws"))
    assert plan is not None
    assert [item.policy for item in plan.items] == ["global"]
    assert Policy(rules=[Rule("/ws", messages="5/second")]).plan(
        RequestInfo("GET", "/ws")) is None


@pytest.mark.parametrize("rule", [
    Rule("/ws", messages="5/second", shadow=True),
    Rule("/ws", messages="5/second", exempt_when=lambda request: True),
])
def test_shadow_and_exempt_connections_are_not_limited(rule: Rule) -> None:
    echo, client = serve([rule])
    echoes, code = flood(client, 30)
    assert (len(echoes), code) == (30, None)
    assert len(echo.received) == 30


def test_a_decorated_websocket_route_takes_messages() -> None:
    received: list[str] = []

    @limit("10/minute", messages="5/second")
    async def room(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                received.append(await websocket.receive_text())
                await websocket.send_text("ok")
        except WebSocketDisconnect as disconnect:
            received.append(f"disconnect {disconnect.code}")

    app = Starlette(routes=[WebSocketRoute("/rooms/{name}", room)])
    with TestClient(RateLimitMiddleware(app, storage="memory://")) as client:
        echoes, code = flood(client, 30, "/rooms/a")
    assert (len(echoes), code) == (5, 1008)
    assert received == ["0", "1", "2", "3", "4", "disconnect 1008"]


@pytest.mark.parametrize(("messages", "says"), [
    ("lots", "messages: 'lots' is not a rate limit"),
    (5, "messages: limits must be a string"),
    ([], "gives no rate"),
    ("0/second", "allows nothing"),
])
def test_bad_messages_is_a_configuration_error(messages: Any, says: str) -> None:
    with pytest.raises(ConfigurationError, match="Rule\\('/ws'\\)") as error:
        Rule("/ws", messages=messages)
    assert says in str(error.value)


def test_an_exempt_rule_takes_no_messages() -> None:
    with pytest.raises(ConfigurationError, match="drop messages="):
        Rule("/ws", exempt=True, messages="5/second")


async def test_sends_after_the_close_never_reach_the_server() -> None:
    after: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
        after.append(message)
        after.append(await receive())  # asked again: still the disconnect
        await send({"type": "websocket.send", "text": "too late"})
        await send({"type": "websocket.close", "code": 1000})

    middleware = RateLimitMiddleware(app, storage="memory://",
                                     rules=[Rule("/", messages="3/second")])
    recorder = Recorder([{"type": "websocket.connect"},
                         *({"type": "websocket.receive", "text": str(i)} for i in range(10))])
    await middleware(ws_scope(), recorder.receive, recorder.send)
    assert recorder.sent == [
        {"type": "websocket.accept"},
        *({"type": "websocket.send", "text": str(i)} for i in range(3)),
        {"type": "websocket.close", "code": 1008, "reason": "message rate limit exceeded"},
    ]
    assert after == [{"type": "websocket.disconnect", "code": 1008}] * 2
    assert len(recorder.incoming) == 6  # the rest were never read


async def test_an_app_that_closes_first_gets_no_close_of_ours() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        while (await receive())["type"] == "websocket.receive":
            pass

    middleware = RateLimitMiddleware(app, storage="memory://",
                                     rules=[Rule("/", messages="1/second")])
    recorder = Recorder([{"type": "websocket.connect"},
                         *({"type": "websocket.receive", "text": "x"} for _ in range(3)),
                         {"type": "websocket.disconnect", "code": 1000}])
    await middleware(ws_scope(), recorder.receive, recorder.send)
    assert recorder.sent == [{"type": "websocket.accept"},
                             {"type": "websocket.close", "code": 1000}]
