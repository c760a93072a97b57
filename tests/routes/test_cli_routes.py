"""``ratelimit-mw config --app module:app``: routes, their limits, rules matching none."""

from __future__ import annotations

import io

import pytest

from ratelimit_mw.cli import main


def run(*args: str) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = main(["config", *args], out=out)
    return code, [" ".join(line.split()) for line in out.getvalue().splitlines()]


def test_routes_with_their_limits_and_the_rules_that_match_nothing() -> None:
    code, lines = run("--app", "tests.routes.cli_apps:wrapped")
    assert code == 0
    assert lines == [
        "limits from the middleware in the app",
        "routes of tests.routes.cli_apps:wrapped (starlette):",
        "GET /login default: 60/minute",
        "POST /login /login: 5 per 1 minute [@limit]",
        "GET /health /health: exempt [@limit]",
        "GET /items/{id:int} /items/{id}: 10 per 1 minute [rules=]",
        "rules that match no route:",
        "Rule('/itemz/{id}')",
    ]


def test_websocket_routes_show_their_message_limits() -> None:
    code, lines = run("--app", "tests.routes.cli_apps:sockets")
    assert code == 0
    assert lines[2:] == [
        "* /feed /feed: handshake not limited; messages: 20 per 1 second per connection "
        "[rules=]",
        "* /chat /chat: 10 per 1 minute; messages: 5 per 1 second, 100 per 1 minute per "
        "connection [rules=]",
    ]


def test_middleware_added_with_add_middleware() -> None:
    code, lines = run("--app", "tests.routes.cli_apps:added")
    assert code == 0
    assert "GET /items/{id:int} default: 30/minute" in lines
    assert "rules that match no route:" not in lines


def test_no_router_is_said_not_failed() -> None:
    code, lines = run("--app", "tests.routes.cli_apps:bare")
    assert code == 0
    assert lines[-1].startswith("no router found in tests.routes.cli_apps:bare")


@pytest.mark.parametrize(("target", "message"), [
    ("tests.routes.cli_apps", "write module:attribute"),
    ("tests.routes.nothing_here:app", "cannot import 'tests.routes.nothing_here'"),
    ("tests.routes.cli_apps:missing", "has no 'missing'"),
])
def test_bad_targets_name_what_to_change(target: str, message: str) -> None:
    code, lines = run("--app", target)
    assert code == 1
    assert message in lines[0]
