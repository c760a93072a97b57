"""``ratelimit_mw.flask.RateLimit``: app.config["RATELIMIT_*"], flask.g.ratelimit,
@limit on views and blueprints, through a real Flask app."""

from __future__ import annotations

import logging
from typing import Any

import flask
import httpx
import pytest

from ratelimit_mw import ConfigurationError, Decision, Rule, WSGIRateLimitMiddleware, limit
from ratelimit_mw.flask import RateLimit

CLIENT = "203.0.113.7"


def get(app: flask.Flask, method: str, paths: list[str]) -> list[httpx.Response]:
    transport = httpx.WSGITransport(app, remote_addr=CLIENT)
    with httpx.Client(transport=transport, base_url="http://testserver") as client:
        return [client.request(method, path) for path in paths]


def build(config: dict[str, Any], **options: Any) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config.update(config)
    shop = flask.Blueprint("shop", __name__, url_prefix="/shop")

    @shop.get("/<int:item_id>")
    def shop_item(item_id: int) -> str:
        return str(item_id)

    limit("2/minute")(shop)

    @app.post("/login")
    @limit("3/minute")
    def login() -> dict[str, Any]:
        decision: Decision | None = flask.g.ratelimit
        assert decision is not None
        return {"rule": decision.plan.rule, "remaining": decision.quotas[0].remaining}

    @app.get("/")
    def home() -> dict[str, Any]:
        decision: Decision | None = flask.g.ratelimit
        return {"rule": None if decision is None else decision.plan.rule}

    app.register_blueprint(shop)
    RateLimit(app, **options)
    return app


def test_configured_from_app_config_with_decorators() -> None:
    app = build({"RATELIMIT_STORAGE": "memory://", "RATELIMIT_DEFAULT_LIMITS": "10/minute",
                 "RATELIMIT_STRATEGY": "moving-window"})
    logins = get(app, "POST", ["/login"] * 4)
    assert [r.status_code for r in logins] == [200, 200, 200, 429]
    assert [r.json() for r in logins[:3]] == [
        {"rule": "/login", "remaining": n} for n in (2, 1, 0)]
    assert logins[3].headers["content-type"] == "application/problem+json"
    shop = get(app, "GET", ["/shop/1", "/shop/2", "/shop/3"])
    assert [r.status_code for r in shop] == [200, 200, 429]
    [home] = get(app, "GET", ["/"])
    assert home.json() == {"rule": "default"}
    assert home.headers["x-ratelimit-limit"] == "10"
    middleware = RateLimit.middleware(app)
    assert isinstance(middleware, WSGIRateLimitMiddleware)
    assert middleware.limiter is not None
    assert middleware.limiter.strategy_name == "moving-window"


def test_init_app_rules_from_config_and_text_values() -> None:
    ratelimit = RateLimit(storage="memory://")
    app = flask.Flask(__name__)
    app.config.update({
        "RATELIMIT_DEFAULT_LIMITS": "10/minute",
        # Rule objects and TOML-like tables side by side; text as from the environment.
        "RATELIMIT_RULES": [Rule("/", "1/minute"), {"path": "/other", "exempt": True}],
        "RATELIMIT_SHADOW": "false",
    })

    @app.get("/")
    def home() -> str:
        return "home"

    @app.get("/other")
    def other() -> str:
        return "other"

    ratelimit.init_app(app)
    assert [r.status_code for r in get(app, "GET", ["/", "/", "/other", "/other"])] == [
        200, 429, 200, 200]
    with pytest.raises(RuntimeError, match="already called"):
        ratelimit.init_app(app)


def test_disabled_from_config_text() -> None:
    app = build({"RATELIMIT_ENABLED": "false", "RATELIMIT_DEFAULT_LIMITS": "1/minute"})
    responses = get(app, "GET", ["/"] * 3)
    assert [r.json() for r in responses] == [{"rule": None}] * 3
    assert "x-ratelimit-limit" not in responses[0].headers


@pytest.mark.parametrize(("config", "message"), [
    ({"RATELIMIT_DEFAULT_LIMTS": "1/minute"}, "unknown key 'RATELIMIT_DEFAULT_LIMTS'"),
    ({"RATELIMIT_DEFAULT_LIMITS": "lots"}, "'lots' is not a rate limit"),
    ({"RATELIMIT_ENABLED": "maybe"}, "RATELIMIT_ENABLED='maybe': use true or false"),
])
def test_bad_config_names_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        build(config)
    assert message in str(raised.value)
    assert str(raised.value).startswith("app.config")


def test_drift_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_mw")
    app = build({"RATELIMIT_STORAGE": "memory://", "RATELIMIT_DEFAULT_LIMITS": "10/minute",
                 "RATELIMIT_RULES": [Rule("/shopp/{id}", "1/minute")]})
    get(app, "GET", ["/"])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["Rule('/shopp/{id}') matches no route of the flask app: check its "
                      "path (a typo, or a route renamed?)"]


def test_limited_app_answers_refusals() -> None:
    def too_many(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        decision: Decision = environ["ratelimit_mw.decision"]
        start_response("429 Too Many Requests", [("Content-Type", "text/plain")])
        return [f"slow down ({decision.violated[0]})".encode()]

    app = build({"RATELIMIT_STORAGE": "memory://"}, limited_app=too_many)
    responses = get(app, "POST", ["/login"] * 4)
    assert responses[3].status_code == 429
    assert responses[3].text == "slow down (/login)"
    assert responses[3].headers["x-ratelimit-remaining"] == "0"
