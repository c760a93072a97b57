"""Limits chosen per request: ``Rule(limits=callable)`` and ``default_limits=callable``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ratelimit_mw import (
    MiddlewareOptions,
    RateLimitMiddleware,
    RequestInfo,
    Rule,
    WSGIRateLimitMiddleware,
)
from ratelimit_mw._core import Policy
from ratelimit_mw.config import load_settings
from ratelimit_mw.errors import ConfigurationError

TIERS = {"free": "2/minute", "pro": "5/minute"}


def tier(request: RequestInfo) -> str | None:
    plan = request.header("x-plan")
    if plan == "internal":
        return None  # not limited by this rule
    return TIERS.get(plan or "", TIERS["free"])


def request(plan: str | None, client: str = "203.0.113.7") -> RequestInfo:
    return RequestInfo("GET", "/search", headers={"x-plan": plan} if plan else {},
                       client=client)


def test_each_request_gets_the_limits_its_function_returns() -> None:
    policy = Policy(rules=[Rule("/search", tier)])
    free = policy.plan(request(None))
    pro = policy.plan(request("pro", client="203.0.113.8"))
    assert free is not None
    assert pro is not None
    assert [item.limit.amount for item in free.items] == [2]
    assert [item.limit.amount for item in pro.items] == [5]
    assert free.items[0].policy == pro.items[0].policy == "/search"  # one rule's name


def test_none_means_the_rule_does_not_limit_the_request() -> None:
    policy = Policy(default_limits="1/minute", rules=[Rule("/search", tier)])
    assert policy.plan(request("internal")) is None  # not the default limits either


def test_a_repeated_spec_is_parsed_once_and_plans_are_reused() -> None:
    policy = Policy(rules=[Rule("/search", tier)])
    first = policy.plan(request("pro"))
    assert all(policy.plan(request("pro")) is first for _ in range(100))
    assert len(policy._specs) == 1


def test_a_function_as_default_limits_and_several_limits_per_spec() -> None:
    policy = Policy(default_limits=lambda r: ["10/second", "100/hour"])
    plan = policy.plan(RequestInfo("GET", "/anything", client="203.0.113.7"))
    assert plan is not None
    assert [(i.limit.amount, i.limit.get_expiry()) for i in plan.items] == [(10, 1),
                                                                           (100, 3600)]
    assert len({item.policy for item in plan.items}) == 2  # told apart in the headers


@pytest.mark.parametrize("returned", ["lots", 5, ["5/minute", 3], [], {"a": 1}])
def test_a_bad_spec_is_a_configuration_error_naming_the_rule(returned: object) -> None:
    policy = Policy(rules=[Rule("/search", lambda r: returned, name="search")])
    with pytest.raises(ConfigurationError, match="limits function of 'search'"):
        policy.plan(request(None))


def test_an_exempt_rule_takes_no_limits_function() -> None:
    with pytest.raises(ConfigurationError, match="exempt rule takes no limits"):
        Rule("/x", tier, exempt=True)


async def _ok(scope: object, receive: object, send: object) -> None:
    await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


async def test_headers_show_the_quota_applied_asgi(storage_url: str) -> None:
    app = RateLimitMiddleware(_ok, storage=storage_url, rules=[Rule("/search", tier)])
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        free = [(await client.get("/search")).status_code for _ in range(3)]
        pro = await client.get("/search", headers={"X-Plan": "pro"})
        internal = await client.get("/search", headers={"X-Plan": "internal"})
    assert free == [200, 200, 429]
    assert pro.status_code == 200
    assert pro.headers["ratelimit-policy"] == '"/search";q=5;w=60'
    assert pro.headers["x-ratelimit-limit"] == "5"
    assert "ratelimit-policy" not in internal.headers
    await app.limiter.aclose()  # type: ignore[union-attr]


def test_headers_show_the_quota_applied_wsgi(storage_url: str) -> None:
    def ok(environ: object, start_response: object) -> list[bytes]:
        start_response("200 OK", [])  # type: ignore[operator]
        return [b"ok"]

    app = WSGIRateLimitMiddleware(ok, storage=storage_url, rules=[Rule("/search", tier)])
    transport = httpx.WSGITransport(app=app, remote_addr="203.0.113.10")
    with httpx.Client(transport=transport, base_url="http://test") as client:
        free = [client.get("/search").status_code for _ in range(3)]
        pro = client.get("/search", headers={"X-Plan": "pro"})
    assert free == [200, 200, 429]
    assert pro.headers["ratelimit-policy"] == '"/search";q=5;w=60'
    app.limiter.close()  # type: ignore[union-attr]


# -- [tiers] in the configuration file ----------------------------------------------------

TIERS_TOML = """
default_limits = "tier"

[[rules]]
path = "/search"
limits = "tier"
name = "search"

[[rules]]
path = "/login"
limits = "5/minute"

[tiers]
header = "X-Plan"
default = "free"

[tiers.limits]
free = "2/minute"
pro = "10/minute;1000/day"
"""


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ratelimit.toml"
    path.write_text(text)
    return path


def test_tiers_from_a_file_choose_the_limits_by_header(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, TIERS_TOML), environ={})
    policy = MiddlewareOptions(**settings.middleware_options()).policy()
    amounts = {}
    for plan_name in (None, "pro", "gold"):
        plan = policy.plan(request(plan_name))
        assert plan is not None
        amounts[plan_name] = [item.limit.amount for item in plan.items]
    assert amounts == {None: [2], "pro": [10, 1000], "gold": [2]}  # unknown: the default
    other = policy.plan(RequestInfo("GET", "/other", headers={"x-plan": "pro"},
                                    client="203.0.113.7"))
    assert other is not None
    assert other.rule == "default"
    assert [item.limit.amount for item in other.items] == [10, 1000]


@pytest.mark.parametrize(("tiers", "message"), [
    ('[tiers]\ndefault = "free"\n[tiers.limits]\nfree = "1/minute"', "tiers.header"),
    ('[tiers]\nheader = "X-Plan"\ndefault = "gold"\n[tiers.limits]\nfree = "1/minute"',
     "tiers.default='gold'"),
    ('[tiers]\nheader = "X-Plan"\ndefault = "free"\n[tiers.limits]\nfree = "lots"',
     "tiers.limits.free"),
    ('[tiers]\nheader = "X-Plan"\ndefault = "free"\ncolour = 1\n[tiers.limits]\nfree = '
     '"1/minute"', "unknown field"),
    ('tiers = "free"', "[tiers] table"),
])
def test_bad_tiers_fail_at_load(tmp_path: Path, tiers: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(write_config(tmp_path, tiers + "\n"), environ={})
    assert message in str(caught.value)


def test_tier_without_a_tiers_table_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"needs a \[tiers\] table"):
        load_settings(write_config(tmp_path, 'default_limits = "tier"\n'), environ={})
