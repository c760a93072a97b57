"""Quota headers and problem bodies, from hand-built decisions. No I/O.

The structured fields are read with the real RFC 9651 parser (http_sf), never by hand.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, NamedTuple

import http_sf
import pytest
from hypothesis import given
from hypothesis import strategies as st
from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)

from ratelimit_mw._core import Decision, Plan, PlanItem, Quota
from ratelimit_mw._headers import (
    PROBLEM_JSON,
    QUOTA_EXCEEDED,
    HeaderRenderer,
    problem_body,
    unavailable_body,
)
from ratelimit_mw.errors import ConfigurationError

NOW = 1_700_000_000.0


class Q(NamedTuple):
    """One limit of a hand-built decision."""

    policy: str
    limit: RateLimitItem
    remaining: int
    reset_in: float
    allowed: bool = True
    retry_after: float | None = None  # default: reset_in when refused, else 0


def decision(*specs: Q, allowed: bool | None = None) -> Decision:
    items = tuple(PlanItem(s.limit, "{rule/ip:203.0.113.7}", 1, s.policy) for s in specs)
    quotas = tuple(
        Quota(s.allowed, s.limit, s.remaining, NOW + s.reset_in,
              s.retry_after if s.retry_after is not None
              else (0.0 if s.allowed else max(0.0, s.reset_in)))
        for s in specs
    )
    ok = all(s.allowed for s in specs) if allowed is None else allowed
    return Decision(ok, Plan("rule", "ip:203.0.113.7", items), quotas)


def render(mode: str, d: Decision, now: float = NOW) -> dict[str, str]:
    fields = HeaderRenderer(mode).render(d, now=now)
    names = [name for name, _ in fields]
    assert len(names) == len(set(names)), "each field is sent once"
    return dict(fields)


def sf_list(value: str) -> list[tuple[Any, dict[str, Any]]]:
    value.encode("ascii")  # structured fields are ASCII
    parsed = http_sf.parse(value.encode("ascii"), tltype="list")
    assert isinstance(parsed, list)
    return parsed  # type: ignore[return-value]


LOGIN = Q("login", RateLimitItemPerMinute(5), remaining=3, reset_in=41.2)
HOURLY = Q("api-3600s", RateLimitItemPerHour(1000), remaining=998, reset_in=3000.0)
BURST = Q("api-1s", RateLimitItemPerSecond(10), remaining=9, reset_in=0.4)
REFUSED = Q("login", RateLimitItemPerMinute(5), remaining=0, reset_in=30.2, allowed=False)


# --- modes ----------------------------------------------------------------------------


def test_draft_mode_fields() -> None:
    assert set(render("draft", decision(LOGIN))) == {"RateLimit-Policy", "RateLimit"}


def test_legacy_mode_fields() -> None:
    assert set(render("legacy", decision(LOGIN))) == {
        "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}


def test_both_mode_fields() -> None:
    assert set(render("both", decision(LOGIN))) == {
        "RateLimit-Policy", "RateLimit",
        "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}


def test_default_mode_is_both() -> None:
    assert HeaderRenderer().render(decision(LOGIN), now=NOW) == \
        HeaderRenderer("both").render(decision(LOGIN), now=NOW)


@pytest.mark.parametrize("d", [decision(LOGIN), decision(LOGIN, HOURLY)])
def test_none_mode_gives_nothing_when_allowed(d: Decision) -> None:
    assert HeaderRenderer("none").render(d, now=NOW) == []
    assert HeaderRenderer("none").render_asgi(d) == []


def test_none_mode_keeps_retry_after_on_refusal() -> None:
    fields = HeaderRenderer("none").render(decision(REFUSED), now=NOW)
    assert [name for name, _ in fields] == ["Retry-After"]
    assert int(fields[0][1]) >= 1


@pytest.mark.parametrize("mode", ["", "all", "DRAFT", "ietf", None, 1])
def test_unknown_mode_raises(mode: Any) -> None:
    with pytest.raises(ConfigurationError, match="headers="):
        HeaderRenderer(mode)


@pytest.mark.parametrize("mode", ["draft", "legacy", "both", "none"])
@pytest.mark.parametrize("allowed", [True, False])
def test_no_quotas_no_headers(mode: str, allowed: bool) -> None:
    # A storage error leaves no quotas: no numbers to report, and none are invented.
    d = Decision(allowed, Plan("r", "ip:x", (PlanItem(RateLimitItemPerMinute(1), "{k}", 1,
                                                      "r"),)), (), storage_error=True)
    assert HeaderRenderer(mode).render(d, now=NOW) == []


# --- the IETF draft fields ------------------------------------------------------------


def test_ratelimit_policy_one_member_per_limit() -> None:
    members = sf_list(render("draft", decision(BURST, HOURLY))["RateLimit-Policy"])
    assert members == [("api-1s", {"q": 10, "w": 1}), ("api-3600s", {"q": 1000, "w": 3600})]


def test_ratelimit_policy_single_limit() -> None:
    value = render("draft", decision(LOGIN))["RateLimit-Policy"]
    assert value == '"login";q=5;w=60'
    assert sf_list(value) == [("login", {"q": 5, "w": 60})]


def test_ratelimit_policy_odd_windows() -> None:
    d = decision(Q("a", RateLimitItemPerSecond(2, 30), 1, 10.0),
                 Q("b", RateLimitItemPerDay(50_000), 10, 100.0))
    assert sf_list(render("draft", d)["RateLimit-Policy"]) == [
        ("a", {"q": 2, "w": 30}), ("b", {"q": 50_000, "w": 86_400})]


def test_ratelimit_state_r_and_t() -> None:
    members = sf_list(render("draft", decision(LOGIN, HOURLY))["RateLimit"])
    assert members == [("login", {"r": 3, "t": 42}), ("api-3600s", {"r": 998, "t": 3000})]


def test_policy_and_state_members_line_up() -> None:
    fields = render("draft", decision(BURST, LOGIN, HOURLY))
    policies = sf_list(fields["RateLimit-Policy"])
    states = sf_list(fields["RateLimit"])
    assert [name for name, _ in policies] == [name for name, _ in states]
    assert all(set(params) == {"q", "w"} for _, params in policies)
    assert all(set(params) == {"r", "t"} for _, params in states)


@pytest.mark.parametrize(
    ("reset_in", "t"),
    [(41.2, 42), (42.0, 42), (0.01, 1), (0.0, 0), (-5.0, 0), (-0.5, 0), (59.999, 60)],
)
def test_t_is_delay_seconds_rounded_up_never_negative(reset_in: float, t: int) -> None:
    d = decision(Q("p", RateLimitItemPerMinute(5), 2, reset_in))
    [(_, params)] = sf_list(render("draft", d)["RateLimit"])
    assert params["t"] == t
    assert isinstance(params["t"], int)


@given(st.floats(min_value=-100.0, max_value=3600.0), st.floats(min_value=1e9, max_value=3e9))
def test_t_is_never_an_epoch(reset_in: float, now: float) -> None:
    d = Decision(True, Plan("r", "ip:x", (PlanItem(RateLimitItemPerHour(9), "{k}", 1, "p"),)),
                 (Quota(True, RateLimitItemPerHour(9), 4, now + reset_in, 0.0),))
    [(_, params)] = sf_list(HeaderRenderer("draft").render(d, now=now)[1][1])
    assert 0 <= params["t"] <= 3601
    assert params["t"] == max(0, math.ceil((now + reset_in) - now))


def test_t_with_the_real_clock_is_delay_seconds() -> None:
    import time

    now = time.time()
    d = Decision(True, Plan("r", "ip:x", (PlanItem(RateLimitItemPerMinute(9), "{k}", 1, "p"),)),
                 (Quota(True, RateLimitItemPerMinute(9), 4, now + 30, 0.0),))
    fields = dict(HeaderRenderer("draft").render(d))
    [(_, params)] = sf_list(fields["RateLimit"])
    assert 28 <= params["t"] <= 31


def test_r_is_never_negative() -> None:
    d = decision(Q("p", RateLimitItemPerMinute(5), -3, 10.0, allowed=False))
    fields = render("both", d)
    [(_, params)] = sf_list(fields["RateLimit"])
    assert params["r"] == 0
    assert fields["X-RateLimit-Remaining"] == "0"


@pytest.mark.parametrize(
    "name",
    [
        'say "hi"',
        "back\\slash",
        '\\"',
        '"',
        "\\",
        "café",
        "日本語",
        "tab\there",
        "new\nline",
        "\x00\x7f",
        "",
        "/items/{id}",
        "emoji 😀",
        "a,b;c=d",
    ],
)
def test_any_policy_name_serialises_to_a_valid_sf_string(name: str) -> None:
    d = decision(Q(name, RateLimitItemPerMinute(5), 1, 5.0),
                 Q(name + "-2", RateLimitItemPerHour(50), 1, 5.0))
    fields = render("draft", d)
    for field in ("RateLimit-Policy", "RateLimit"):
        members = sf_list(fields[field])
        assert len(members) == 2
        for value, _ in members:
            assert isinstance(value, str)
    policies = sf_list(fields["RateLimit-Policy"])
    if name.isascii() and name.isprintable():
        assert policies[0][0] == name
        assert policies[1][0] == name + "-2"


@given(st.lists(st.text(max_size=30), min_size=1, max_size=5))
def test_arbitrary_policy_names_always_parse(names: list[str]) -> None:
    d = decision(*(Q(n, RateLimitItemPerMinute(i + 1), i, 10.0) for i, n in enumerate(names)))
    fields = render("both", d)
    policies = sf_list(fields["RateLimit-Policy"])
    states = sf_list(fields["RateLimit"])
    assert len(policies) == len(states) == len(names)
    assert [p["q"] for _, p in policies] == list(range(1, len(names) + 1))
    assert [p["r"] for _, p in states] == list(range(len(names)))
    for name, (value, _) in zip(names, policies, strict=True):
        if all(" " <= c <= "~" for c in name):
            assert value == name


def test_renderer_cache_does_not_mix_policies() -> None:
    renderer = HeaderRenderer("draft")
    a = dict(renderer.render(decision(Q("p", RateLimitItemPerMinute(5), 1, 5.0)), now=NOW))
    b = dict(renderer.render(decision(Q("p", RateLimitItemPerMinute(6), 1, 5.0)), now=NOW))
    c = dict(renderer.render(decision(Q("p", RateLimitItemPerHour(5), 1, 5.0)), now=NOW))
    assert sf_list(a["RateLimit-Policy"]) == [("p", {"q": 5, "w": 60})]
    assert sf_list(b["RateLimit-Policy"]) == [("p", {"q": 6, "w": 60})]
    assert sf_list(c["RateLimit-Policy"]) == [("p", {"q": 5, "w": 3600})]


def test_renderer_survives_many_policy_names() -> None:
    renderer = HeaderRenderer("draft")
    for i in range(5000):
        fields = dict(renderer.render(decision(Q(f"p{i}", RateLimitItemPerMinute(5), 1, 5.0)),
                                      now=NOW))
        if i % 997 == 0:
            assert sf_list(fields["RateLimit-Policy"]) == [(f"p{i}", {"q": 5, "w": 60})]


# --- the legacy trio ------------------------------------------------------------------


def test_legacy_single_limit() -> None:
    fields = render("legacy", decision(LOGIN))
    assert fields["X-RateLimit-Limit"] == "5"
    assert fields["X-RateLimit-Remaining"] == "3"
    assert fields["X-RateLimit-Reset"] == str(math.ceil(NOW + 41.2))


def test_legacy_reports_the_most_restrictive_limit() -> None:
    tight = Q("b", RateLimitItemPerMinute(10), remaining=2, reset_in=20.0)
    loose = Q("a", RateLimitItemPerHour(100), remaining=50, reset_in=2000.0)
    for order in ((tight, loose), (loose, tight)):
        fields = render("legacy", decision(*order))
        assert fields["X-RateLimit-Limit"] == "10"
        assert fields["X-RateLimit-Remaining"] == "2"
        assert fields["X-RateLimit-Reset"] == str(math.ceil(NOW + 20.0))


def test_legacy_prefers_the_refused_limit() -> None:
    # The hourly limit is exhausted; the per-second one is at 0 but not what refused.
    refused = Q("h", RateLimitItemPerHour(100), remaining=0, reset_in=1800.0, allowed=False)
    other = Q("s", RateLimitItemPerSecond(10), remaining=0, reset_in=0.5)
    for order in ((refused, other), (other, refused)):
        fields = render("legacy", decision(*order))
        assert fields["X-RateLimit-Limit"] == "100"
        assert fields["X-RateLimit-Remaining"] == "0"
        assert fields["X-RateLimit-Reset"] == str(math.ceil(NOW + 1800.0))


def test_legacy_tie_on_remaining_takes_the_later_reset() -> None:
    a = Q("a", RateLimitItemPerMinute(10), remaining=0, reset_in=30.0, allowed=False)
    b = Q("b", RateLimitItemPerHour(100), remaining=0, reset_in=900.0, allowed=False)
    fields = render("legacy", decision(a, b))
    assert fields["X-RateLimit-Limit"] == "100"
    assert fields["X-RateLimit-Reset"] == str(math.ceil(NOW + 900.0))


@given(st.floats(min_value=0.0, max_value=86_400.0))
def test_legacy_reset_is_an_integer_epoch(reset_in: float) -> None:
    fields = render("legacy", decision(Q("p", RateLimitItemPerDay(5), 1, reset_in)))
    reset = fields["X-RateLimit-Reset"]
    assert reset.isdigit()
    assert int(reset) >= NOW + reset_in
    assert int(reset) - (NOW + reset_in) < 1
    assert int(reset) > 1_000_000_000  # an epoch, not a delay


def test_legacy_values_are_integers() -> None:
    fields = render("legacy", decision(BURST, HOURLY, LOGIN))
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert fields[name].isdigit(), name


# --- Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["draft", "legacy", "both"])
def test_no_retry_after_when_allowed(mode: str) -> None:
    assert "Retry-After" not in render(mode, decision(LOGIN, HOURLY))
    exhausted = Q("p", RateLimitItemPerMinute(5), remaining=0, reset_in=30.0)
    assert "Retry-After" not in render(mode, decision(exhausted))


@pytest.mark.parametrize("mode", ["draft", "legacy", "both"])
def test_retry_after_when_refused(mode: str) -> None:
    fields = render(mode, decision(REFUSED))
    assert fields["Retry-After"] == "31"  # ceil(30.2): never before the window's end


@pytest.mark.parametrize(
    ("reset_in", "retry_after", "expected"),
    [
        (30.2, 30.2, 31),
        (30.0, 30.0, 30),
        (0.2, 0.2, 1),
        (0.0, 0.0, 1),
        (-3.0, 0.0, 1),
        # The limiter's retry_after is longer than the window (cost > 1): believe it.
        (10.0, 70.0, 70),
        # retry_after shorter than the window's end: the end wins.
        (30.0, 0.0, 30),
        (45.5, 12.0, 46),
    ],
)
def test_retry_after_never_before_the_window_end(reset_in: float, retry_after: float,
                                                 expected: int) -> None:
    d = decision(Q("p", RateLimitItemPerMinute(5), 0, reset_in, allowed=False,
                   retry_after=retry_after))
    value = render("both", d)["Retry-After"]
    assert value.isdigit()
    assert int(value) == expected
    assert int(value) >= 1
    assert int(value) >= math.ceil(reset_in)


def test_retry_after_is_the_longest_wait_of_the_refused_limits() -> None:
    a = Q("a", RateLimitItemPerMinute(5), 0, 20.0, allowed=False)
    b = Q("b", RateLimitItemPerHour(100), 0, 1200.5, allowed=False)
    c = Q("c", RateLimitItemPerDay(1000), 900, 80_000.0)  # allowed: not a reason to wait
    assert render("both", decision(a, b, c))["Retry-After"] == "1201"


def test_retry_after_even_in_draft_only_and_legacy_only() -> None:
    assert "Retry-After" in render("draft", decision(REFUSED))
    assert "Retry-After" in render("legacy", decision(REFUSED))


def test_refused_decision_without_a_refused_quota_still_renders() -> None:
    # allowed=False with every quota allowed must not crash the renderer.
    fields = render("both", decision(LOGIN, allowed=False))
    assert int(fields["Retry-After"]) >= 1


# --- render_asgi ----------------------------------------------------------------------


def test_render_asgi_is_lower_case_latin1_bytes() -> None:
    d = decision(REFUSED, HOURLY)
    renderer = HeaderRenderer("both")
    raw = renderer.render_asgi(d)
    text = renderer.render(d)
    assert [name for name, _ in raw] == [name.lower().encode() for name, _ in text]
    for (name, value), (_, expected) in zip(raw, text, strict=True):
        assert isinstance(name, bytes)
        assert isinstance(value, bytes)
        assert name == name.lower()
        # The two calls read the clock separately; t / Retry-After may differ by 1.
        if name in (b"ratelimit", b"retry-after"):
            continue
        assert value.decode("latin-1") == expected
    assert dict(raw)[b"x-ratelimit-limit"] == b"5"


@pytest.mark.parametrize("mode", ["draft", "legacy", "both", "none"])
@pytest.mark.parametrize("remaining", [0, 3, -2])
def test_one_allowed_quota_fast_path_equals_the_general_path(mode: str,
                                                             remaining: int) -> None:
    # render(d) without now= takes the one-quota shortcut; with now= the general path.
    # reset_at is a whole second, so every clock reading within one second gives the
    # same t; a comparison that straddled a second is taken again.
    item = PlanItem(RateLimitItemPerMinute(5), "{rule/ip:1}", 1, "café \"q\"")
    renderer = HeaderRenderer(mode)
    for _ in range(5):
        second = math.floor(time.time())
        d = Decision(True, Plan("rule", "ip:1", (item,)),
                     (Quota(True, item.limit, remaining, second + 30.0, 0.0),))
        fast, general, raw = (renderer.render(d), renderer.render(d, now=time.time()),
                              renderer.render_asgi(d))
        if math.floor(time.time()) == second:
            break
    assert fast == general
    assert [(n.lower().encode(), v.encode()) for n, v in fast] == raw
    if mode != "none":
        assert fast


def test_render_asgi_with_non_ascii_policy_names() -> None:
    d = decision(Q("café", RateLimitItemPerMinute(5), 1, 5.0))
    for _, value in HeaderRenderer("draft").render_asgi(d):
        value.decode("ascii")


# --- problem bodies -------------------------------------------------------------------


def test_problem_body_is_rfc9457_quota_exceeded() -> None:
    ok = Q("api-1s", RateLimitItemPerSecond(10), 4, 0.5)
    bad = Q("api-3600s", RateLimitItemPerHour(1000), 0, 100.0, allowed=False)
    body = json.loads(problem_body(decision(ok, bad)))
    assert body["type"] == "https://iana.org/assignments/http-problem-types#quota-exceeded"
    assert body["type"] == QUOTA_EXCEEDED
    assert body["status"] == 429
    assert body["violated-policies"] == ["api-3600s"]
    assert isinstance(body["title"], str)
    assert body["title"]


def test_problem_body_lists_every_violated_policy() -> None:
    a = Q("a", RateLimitItemPerMinute(5), 0, 10.0, allowed=False)
    b = Q("b", RateLimitItemPerHour(5), 0, 10.0, allowed=False)
    assert json.loads(problem_body(decision(a, b)))["violated-policies"] == ["a", "b"]


@pytest.mark.parametrize("name", ['quote"', "back\\slash", "日本", "\x00", "</script>"])
def test_problem_body_is_valid_json_for_any_name(name: str) -> None:
    raw = problem_body(decision(Q(name, RateLimitItemPerMinute(5), 0, 10.0, allowed=False)))
    assert isinstance(raw, bytes)
    raw.decode("utf-8")
    assert json.loads(raw)["violated-policies"] == [name]


def test_problem_body_after_storage_error() -> None:
    d = Decision(False, Plan("r", "ip:x", (PlanItem(RateLimitItemPerMinute(1), "{k}", 1,
                                                    "r"),)), (), storage_error=True)
    body = json.loads(problem_body(d))
    assert body["status"] == 429
    assert body["violated-policies"] == []


def test_unavailable_body() -> None:
    body = json.loads(unavailable_body())
    assert body["status"] == 503
    assert body["type"] == "about:blank"
    assert PROBLEM_JSON == "application/problem+json"


@pytest.mark.parametrize("mode", ["draft", "legacy", "both", "none"])
@pytest.mark.parametrize("d", [decision(LOGIN), decision(LOGIN, HOURLY), decision(REFUSED)])
def test_render_asgi_equals_render_encoded(mode: str, d: Decision) -> None:
    # render_asgi has a fast path for one allowed quota: it must say exactly what
    # render() says (the clock is read separately, so compare with t taken now).
    renderer = HeaderRenderer(mode)
    expected = [(n.lower().encode(), v.encode()) for n, v in renderer.render(d)]
    assert renderer.render_asgi(d) == expected
