"""``ratelimit_mw.django.RateLimitMiddleware`` in MIDDLEWARE, configured from
``settings.RATELIMIT``, under Django's own WSGI and ASGI handlers (sync and async)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from ratelimit_mw import ConfigurationError, Rule
from tests.helpers import closed_port_url

CLIENT = "203.0.113.7"
BASE = "http://testserver"


@pytest.fixture
def configure(django_urls: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set settings.MIDDLEWARE and settings.RATELIMIT; returns a function building
    Django's WSGI or ASGI handler (which loads the middleware) from them."""
    from django.conf import settings

    def build(ratelimit: dict[str, Any], kind: str = "wsgi") -> Any:
        monkeypatch.setattr(settings, "MIDDLEWARE",
                            ["ratelimit_mw.django.RateLimitMiddleware"], raising=False)
        monkeypatch.setattr(settings, "RATELIMIT", ratelimit, raising=False)
        if kind == "wsgi":
            from django.core.handlers.wsgi import WSGIHandler

            return WSGIHandler()
        from django.core.handlers.asgi import ASGIHandler

        return ASGIHandler()

    return build


def wsgi(app: Any, method: str, paths: list[str]) -> list[httpx.Response]:
    with httpx.Client(transport=httpx.WSGITransport(app, remote_addr=CLIENT)) as client:
        return [client.request(method, BASE + path) for path in paths]


async def asgi(app: Any, method: str, paths: list[str]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app, client=(CLIENT, 1234))
    async with httpx.AsyncClient(transport=transport) as client:
        return [await client.request(method, BASE + path) for path in paths]


SETTINGS = {"storage": "memory://", "default_limits": "10/minute",
            "rules": [{"path": "/plain", "limits": "1/minute"}, Rule("/whoami", "3/minute")]}


def test_wsgi_decorators_settings_rules_and_request_ratelimit(configure: Any) -> None:
    app = configure(SETTINGS)
    logins = wsgi(app, "POST", ["/login", "/login"])
    assert [r.status_code for r in logins] == [200, 200]
    [refused] = wsgi(app, "POST", ["/login"])
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["violated-policies"] == ["/login"]
    assert refused.headers["retry-after"].isdigit()
    whoami = wsgi(app, "GET", ["/whoami"] * 4)
    assert [r.status_code for r in whoami] == [200, 200, 200, 429]
    assert whoami[0].json() == {"rule": "/whoami", "allowed": True}
    assert whoami[0].headers["x-ratelimit-limit"] == "3"
    assert [r.status_code for r in wsgi(app, "GET", ["/plain", "/plain"])] == [200, 429]
    [health] = wsgi(app, "GET", ["/health"])
    assert (health.status_code, "x-ratelimit-limit" in health.headers) == (200, False)
    # An async view under WSGI: Django runs it, the limit holds.
    assert [r.status_code for r in wsgi(app, "GET", ["/slow"] * 3)] == [200, 200, 429]


async def test_asgi_async_middleware_and_views(configure: Any) -> None:
    app = configure(SETTINGS, "asgi")
    responses = await asgi(app, "GET", ["/slow"] * 3)
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].json() == {"rule": "/slow"}
    assert responses[0].headers["ratelimit-policy"] == '"/slow";q=2;w=60'
    whoami = await asgi(app, "GET", ["/whoami"] * 4)
    assert [r.status_code for r in whoami] == [200, 200, 200, 429]
    [health] = await asgi(app, "GET", ["/health"])
    assert health.status_code == 200
    assert "ratelimit-policy" not in health.headers


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
async def test_limited_view_of_yours(configure: Any, kind: str) -> None:
    app = configure({**SETTINGS, "limited_view": "tests.routes.django_urls.too_many"}, kind)
    paths = ["/plain", "/plain"]
    responses = wsgi(app, "GET", paths) if kind == "wsgi" else await asgi(app, "GET", paths)
    assert responses[1].status_code == 429
    assert responses[1].text == "slow down (/plain)"
    assert responses[1].headers["x-ratelimit-remaining"] == "0"


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
async def test_storage_down_deny_is_a_503(configure: Any, kind: str) -> None:
    app = configure({"storage": closed_port_url(), "default_limits": "10/minute",
                     "on_storage_error": "deny", "socket_connect_timeout": 0.2}, kind)
    paths = ["/whoami"]
    [response] = wsgi(app, "GET", paths) if kind == "wsgi" else await asgi(app, "GET", paths)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_drift_warning_names_the_rule(configure: Any,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_mw")
    app = configure({"storage": "memory://", "default_limits": "10/minute",
                     "rules": [{"path": "/who-am-i", "limits": "1/minute"}]})
    wsgi(app, "GET", ["/whoami"])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["Rule('/who-am-i') matches no route of the django app: check its "
                      "path (a typo, or a route renamed?)"]


@pytest.mark.parametrize(("ratelimit", "message"), [
    ({"default_limts": "1/minute"}, "settings.RATELIMIT: unknown key 'default_limts'"),
    ({"enabled": "maybe"}, "settings.RATELIMIT: enabled='maybe': use true or false"),
    ({"limited_view": "tests.routes.django_urls.nothing"}, "limited_view"),
    ({"limited_view": 5}, "give a view or its dotted path"),
])
def test_bad_settings_name_what_to_change(configure: Any, ratelimit: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        configure(ratelimit)
    assert message in str(raised.value)


def test_cli_lists_the_routes_of_a_django_project(configure: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import tests.routes.cli_apps as cli_apps
    from ratelimit_mw.cli import main

    app = configure({"storage": "memory://", "default_limits": "7/minute",
                     "rules": [{"path": "/plian", "limits": "1/minute"}]})
    monkeypatch.setattr(cli_apps, "django_project", app, raising=False)
    out = io.StringIO()
    assert main(["config", "--app", "tests.routes.cli_apps:django_project"], out=out) == 0
    lines = [" ".join(line.split()) for line in out.getvalue().splitlines()]
    assert lines[0] == "limits from the middleware in the app"
    assert "* /login /login: 2 per 1 minute [@limit]" in lines
    assert "* /plain default: 7/minute" in lines
    assert lines[-2:] == ["rules that match no route:", "Rule('/plian')"]


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
async def test_count_when_settles_under_django(configure: Any, kind: str) -> None:
    """Django's response is complete when the middleware sees it: settled at once."""
    settings = {"storage": "memory://", "rules": [
        Rule("/whoami", "2/minute", count_when=lambda response: response.status >= 400),
        Rule("/plain", "2/minute", count_when=lambda response: response.status == 200)]}
    app = configure(settings, kind)
    paths = ["/whoami"] * 4 + ["/plain"] * 3
    responses = wsgi(app, "GET", paths) if kind == "wsgi" else await asgi(app, "GET", paths)
    # /whoami answers 200, which does not count there; /plain counts its 200s.
    assert [r.status_code for r in responses] == [200] * 4 + [200, 200, 429]
