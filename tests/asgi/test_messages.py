"""The ASGI adapter at message level: hand-built scopes, recorded messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ratelimit_mw import RateLimitMiddleware, Rule
from ratelimit_mw._types import Message, Receive, Scope, Send
from tests.helpers import closed_port_url


def http_scope(path: str = "/", method: str = "GET", client: str = "203.0.113.7",
               headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": headers or [],
            "client": (client, 5000), "server": ("127.0.0.1", 8000)}


class Recorder:
    def __init__(self, incoming: list[Message] | None = None) -> None:
        self.sent: list[Message] = []
        self.incoming = list(incoming or [{"type": "http.request", "body": b""}])

    async def receive(self) -> Message:
        return self.incoming.pop(0) if self.incoming else {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def header(self, name: bytes, index: int = 0) -> list[bytes]:
        start = [m for m in self.sent if m["type"].endswith("response.start")][index]
        return [v for k, v in start["headers"] if k == name]


async def streaming_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")], "trailers": True})
    for chunk in (b"a", b"b", b"c"):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"1")],
                "more_trailers": False})


def middleware(app: Any = streaming_app, **options: Any) -> RateLimitMiddleware:
    options.setdefault("storage", "memory://")
    options.setdefault("default_limits", "3/minute")
    return RateLimitMiddleware(app, **options)


async def test_headers_added_exactly_once_and_stream_untouched() -> None:
    mw = middleware()
    rec = Recorder()
    await mw(http_scope(), rec.receive, rec.send)
    types = [m["type"] for m in rec.sent]
    assert types == ["http.response.start", *["http.response.body"] * 4,
                     "http.response.trailers"]
    assert rec.header(b"ratelimit-policy") == [b'"default";q=3;w=60']
    assert rec.header(b"x-ratelimit-remaining") == [b"2"]
    assert rec.header(b"content-type") == [b"text/plain"]
    assert rec.sent[0]["trailers"] is True  # other keys of the start message kept
    assert [m.get("body") for m in rec.sent[1:5]] == [b"a", b"b", b"c", b""]
    assert rec.sent[5]["headers"] == [(b"x-checksum", b"1")]  # trailers untouched


async def test_app_headers_list_not_mutated() -> None:
    original = [(b"content-type", b"text/plain")]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": original})
        await send({"type": "http.response.body", "body": b"x"})

    rec = Recorder()
    await middleware(app)(http_scope(), rec.receive, rec.send)
    assert original == [(b"content-type", b"text/plain")]
    assert len(rec.header(b"ratelimit")) == 1


async def test_pathsend_passes_through() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})

    rec = Recorder()
    await middleware(app)(http_scope(), rec.receive, rec.send)
    assert rec.sent[1] == {"type": "http.response.pathsend", "path": "/etc/hostname"}
    assert rec.header(b"ratelimit-policy")


async def test_fourth_request_gets_problem_429_and_app_not_called() -> None:
    calls = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal calls
        calls += 1
        await streaming_app(scope, receive, send)

    mw = middleware(app)
    for _ in range(3):
        await mw(http_scope(), Recorder().receive, Recorder().send)
    rec = Recorder()
    await mw(http_scope(), rec.receive, rec.send)
    assert calls == 3
    assert rec.sent[0]["status"] == 429
    assert rec.header(b"content-type") == [b"application/problem+json"]
    retry = int(rec.header(b"retry-after")[0])
    assert 1 <= retry <= 60
    body = json.loads(rec.sent[1]["body"])
    assert body["status"] == 429
    assert body["violated-policies"] == ["default"]
    assert int(rec.header(b"content-length")[0]) == len(rec.sent[1]["body"])


async def test_custom_limited_app_sees_decision_and_gets_headers() -> None:
    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        decision = scope["state"]["ratelimit"]
        body = f"slow down ({','.join(decision.violated)})".encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})

    mw = middleware(default_limits="1/minute", limited_app=limited)
    await mw(http_scope(), Recorder().receive, Recorder().send)
    rec = Recorder()
    await mw(http_scope(), rec.receive, rec.send)
    assert rec.sent[1]["body"] == b"slow down (default)"
    assert rec.header(b"retry-after")
    assert rec.header(b"ratelimit")[0].startswith(b'"default";r=0;t=')


async def test_lifespan_passes_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})

    rec = Recorder([{"type": "lifespan.startup"}])
    await middleware(app)({"type": "lifespan", "asgi": {"version": "3.0"}}, rec.receive,
                          rec.send)
    assert seen == ["lifespan"]
    assert rec.sent == [{"type": "lifespan.startup.complete"}]


async def test_exempt_route_untouched() -> None:
    mw = middleware(rules=[Rule("/health", exempt=True)], default_limits="1/minute")
    for _ in range(5):
        rec = Recorder()
        await mw(http_scope("/health/"), rec.receive, rec.send)
        assert rec.sent[0]["status"] == 200
        assert rec.header(b"ratelimit") == []


async def test_decision_in_scope_state_keeps_existing_state() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(scope["state"])
        await streaming_app(scope, receive, send)

    scope = http_scope()
    scope["state"] = {"db": "pool"}
    await middleware(app)(scope, Recorder().receive, Recorder().send)
    assert seen["db"] == "pool"
    assert seen["ratelimit"].allowed is True
    assert seen["ratelimit"].quotas[0].remaining == 2


def ws_scope(extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    scope = http_scope()
    scope.update(type="websocket", scheme="ws", subprotocols=[],
                 extensions=extensions or {})
    del scope["method"]
    return scope


async def echo_ws(scope: Scope, receive: Receive, send: Send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "headers": [(b"x-app", b"1")]})
    await send({"type": "websocket.close", "code": 1000})


async def test_websocket_allowed_accept_carries_headers() -> None:
    rec = Recorder([{"type": "websocket.connect"}])
    await middleware(echo_ws, default_limits="1/minute")(ws_scope(), rec.receive, rec.send)
    accept = rec.sent[0]
    assert accept["type"] == "websocket.accept"
    names = [k for k, _ in accept["headers"]]
    assert names[0] == b"x-app"
    assert b"ratelimit" in names


@pytest.mark.parametrize("extension", [True, False])
async def test_websocket_refused(extension: bool) -> None:
    mw = middleware(echo_ws, default_limits="1/minute")
    exts = {"websocket.http.response": {}} if extension else {}
    await mw(ws_scope(exts), Recorder([{"type": "websocket.connect"}]).receive,
             Recorder().send)
    rec = Recorder([{"type": "websocket.connect"}])
    await mw(ws_scope(exts), rec.receive, rec.send)
    if extension:
        assert rec.sent[0]["type"] == "websocket.http.response.start"
        assert rec.sent[0]["status"] == 429
        assert json.loads(rec.sent[1]["body"])["violated-policies"] == ["default"]
        assert rec.header(b"retry-after")
    else:
        assert rec.sent == [{"type": "websocket.close", "code": 1008,
                             "reason": "rate limit exceeded"}]


async def test_websocket_pass_option() -> None:
    mw = middleware(echo_ws, default_limits="1/minute", websockets="pass")
    for _ in range(3):
        rec = Recorder([{"type": "websocket.connect"}])
        await mw(ws_scope(), rec.receive, rec.send)
        assert rec.sent[0] == {"type": "websocket.accept", "headers": [(b"x-app", b"1")]}


@pytest.mark.parametrize("path", ["/login", "/login/", "//login", "/./login", "/log%69n",
                                  "/a/../login", "/%2E/login"])
async def test_raw_path_variants_match_the_rule(path: str) -> None:
    # Servers hand 'path' decoded; a hand-built or proxied scope may not. Either way the
    # variant must count against the /login rule, not the default.
    mw = middleware(rules=[Rule("/login", "5/minute", methods=["POST"])],
                    default_limits="1000/minute")
    rec = Recorder()
    await mw(http_scope(path, method="POST"), rec.receive, rec.send)
    assert rec.header(b"ratelimit-policy") == [b'"/login";q=5;w=60']


async def test_websocket_refused_on_storage_error_says_try_again() -> None:
    mw = middleware(echo_ws, storage=closed_port_url(), on_storage_error="deny")
    rec = Recorder([{"type": "websocket.connect"}])
    await mw(ws_scope(), rec.receive, rec.send)
    assert rec.sent == [{"type": "websocket.close", "code": 1013,
                         "reason": "rate limit storage unavailable"}]


async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await streaming_app(scope, receive, send)
        return
    for _ in range(2):
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def named_connections(redis_client: Any, name: str) -> int:
    return sum(1 for c in redis_client.client_list() if c.get("name") == name)


@pytest.mark.parametrize("owned", [True, False])
async def test_lifespan_shutdown_closes_only_our_own_limiter(
    redis_url: str, redis_client: Any, owned: bool
) -> None:
    from ratelimit_mw import AsyncRateLimiter

    name = f"rlmw-lifespan-{owned}"
    url = f"{redis_url}?client_name={name}"
    options: dict[str, Any] = {"storage": url} if owned else {
        "storage": None, "limiter": AsyncRateLimiter(url)}
    mw = RateLimitMiddleware(lifespan_app, default_limits="10/minute", **options)
    await mw(http_scope(), Recorder().receive, Recorder().send)  # opens a connection
    assert named_connections(redis_client, name) == 1
    rec = Recorder([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    await mw({"type": "lifespan", "asgi": {"version": "3.0"}}, rec.receive, rec.send)
    assert [m["type"] for m in rec.sent] == ["lifespan.startup.complete",
                                             "lifespan.shutdown.complete"]
    assert named_connections(redis_client, name) == (0 if owned else 1)
    await mw.limiter.aclose()
