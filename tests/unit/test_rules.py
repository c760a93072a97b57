"""Rules and the rule table: which rule applies to a request. No I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from limits import RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerSecond

from ratelimit_mw import keys
from ratelimit_mw._request import RequestInfo
from ratelimit_mw._rules import NAMESPACE, CompiledRule, Rule, RuleTable, parse_limits
from ratelimit_mw.errors import ConfigurationError
from tests.helpers import LOGIN_VARIANTS


def match(rules: list[Rule], path: str, method: str = "GET") -> CompiledRule | None:
    return RuleTable(rules).match(RequestInfo(method, path))


def matched_name(rules: list[Rule], path: str, method: str = "GET") -> str | None:
    found = match(rules, path, method)
    return None if found is None else found.name


# --- configuration errors -------------------------------------------------------------

BAD_RULES: list[tuple[str, Callable[[], Any], str]] = [
    # invalid rate strings
    ("rate-digits", lambda: Rule("/x", "5"), r"'5' is not a rate limit.*5/minute"),
    ("rate-word", lambda: Rule("/x", "lots"), "is not a rate limit"),
    ("rate-unit", lambda: Rule("/x", "5/fortnight"), "is not a rate limit"),
    ("rate-empty", lambda: Rule("/x", ""), "is not a rate limit"),
    ("rate-trailing", lambda: Rule("/x", "5/minute;"), "is not a rate limit"),
    ("rate-negative", lambda: Rule("/x", "-1/minute"), "is not a rate limit"),
    ("rate-zero", lambda: Rule("/x", "0/minute"), "allows nothing"),
    ("rate-in-list", lambda: Rule("/x", ["5/minute", "nope"]), "'nope'"),
    ("rate-int", lambda: Rule("/x", 5), "5"),  # type: ignore[arg-type]
    ("rate-int-in-list", lambda: Rule("/x", ["5/minute", 5]), "got 5"),  # type: ignore[list-item]
    # templates
    ("no-slash", lambda: Rule("login", "5/minute"), "must start with '/'"),
    ("empty", lambda: Rule("", "5/minute"), "must start with '/'"),
    ("bytes", lambda: Rule(b"/x", "5/minute"), "must start with '/'"),  # type: ignore[arg-type]
    ("open-brace", lambda: Rule("/a/{x", "5/minute"), "unbalanced"),
    ("close-brace", lambda: Rule("/a/x}", "5/minute"), "unbalanced"),
    ("double-brace", lambda: Rule("/a/{{x}}", "5/minute"), "unbalanced"),
    ("extra-close", lambda: Rule("/a/{x}}", "5/minute"), "unbalanced"),
    ("lone-open", lambda: Rule("/{", "5/minute"), "unbalanced"),
    ("empty-param", lambda: Rule("/a/{}", "5/minute"), "needs a name"),
    ("bad-name", lambda: Rule("/a/{1x}", "5/minute"), "needs a name"),
    ("dash-name", lambda: Rule("/a/{a-b}", "5/minute"), "needs a name"),
    ("unknown-converter", lambda: Rule("/a/{x:float}", "5/minute"), "unknown converter 'float'"),
    ("uuid-converter", lambda: Rule("/a/{x:uuid}", "5/minute"), "use str, int or path"),
    ("duplicate", lambda: Rule("/{a}/{a}", "5/minute"), "'a' appears twice"),
    ("duplicate-conv", lambda: Rule("/{a}/x/{a:int}", "5/minute"), "appears twice"),
    ("path-not-last", lambda: Rule("/{p:path}/x", "5/minute"), "must come last"),
    ("path-then-param", lambda: Rule("/{p:path}/{q}", "5/minute"), "must come last"),
    # methods
    ("methods-str", lambda: Rule("/x", "5/minute", methods="GET"), r"list.*\['GET'\]"),
    ("methods-unknown", lambda: Rule("/x", "5/minute", methods=["FETCH"]), "FETCH"),
    ("methods-one-unknown", lambda: Rule("/x", "5/minute", methods=["GET", "BREW"]), "BREW"),
    ("methods-empty", lambda: Rule("/x", "5/minute", methods=[]), "matches nothing"),
    ("methods-int", lambda: Rule("/x", "5/minute", methods=[1]), "method"),  # type: ignore[list-item]
    ("methods-not-a-list", lambda: Rule("/x", "5/minute", methods=5), "methods"),  # type: ignore[arg-type]
    # exempt
    ("exempt-limits", lambda: Rule("/x", "5/minute", exempt=True), "exempt rule takes no limits"),
    # cost
    ("cost-zero", lambda: Rule("/x", "5/minute", cost=0), "cost must be a whole number >= 1"),
    ("cost-negative", lambda: Rule("/x", "5/minute", cost=-3), "cost"),
    ("cost-true", lambda: Rule("/x", "5/minute", cost=True), "cost"),
    ("cost-false", lambda: Rule("/x", "5/minute", cost=False), "cost"),
    ("cost-float", lambda: Rule("/x", "5/minute", cost=1.5), "cost"),  # type: ignore[arg-type]
    ("cost-str", lambda: Rule("/x", "5/minute", cost="2"), "cost"),  # type: ignore[arg-type]
    # names
    ("name-empty", lambda: Rule("/x", "5/minute", name=""), "name"),
    ("name-int", lambda: Rule("/x", "5/minute", name=5), "name"),  # type: ignore[arg-type]
    # keys
    ("key-int", lambda: Rule("/x", "5/minute", key=5), "not callable"),  # type: ignore[arg-type]
    ("key-in-list", lambda: Rule("/x", "5/minute", key=[keys.shared(), 5]), "not callable"),  # type: ignore[list-item]
    ("key-str", lambda: Rule("/x", "5/minute", key="client_ip"), "client_ip"),  # type: ignore[arg-type]
    ("key-none-in-list", lambda: Rule("/x", "5/minute", key=[None]), "not callable"),  # type: ignore[list-item]
    # the table
    ("not-a-rule", lambda: RuleTable(["/x"]), "not a Rule"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("build", "match_text"),
                         [pytest.param(b, m, id=i) for i, b, m in BAD_RULES])
def test_bad_configuration_raises_at_construction(build: Callable[[], Any],
                                                  match_text: str) -> None:
    with pytest.raises(ConfigurationError, match=match_text):
        build()


def test_configuration_error_is_a_value_error_and_names_the_rule() -> None:
    with pytest.raises(ValueError, match=r"Rule\('/api/\{v\}/\{v\}'\)"):
        Rule("/api/{v}/{v}", "1/minute")


# --- parse_limits ---------------------------------------------------------------------


def test_parse_limits_forms() -> None:
    assert parse_limits(None, "x") == ()
    two = parse_limits("10/second;1000/hour", "x")
    assert [(i.amount, i.get_expiry()) for i in two] == [(10, 1), (1000, 3600)]
    listed = parse_limits(["10/second", RateLimitItemPerHour(1000)], "x")
    assert [(i.amount, i.get_expiry()) for i in listed] == [(10, 1), (1000, 3600)]
    single = parse_limits(RateLimitItemPerMinute(5), "x")
    assert [(i.amount, i.get_expiry()) for i in single] == [(5, 60)]
    spaced = parse_limits("10 per second; 5 / minute", "x")
    assert [(i.amount, i.get_expiry()) for i in spaced] == [(10, 1), (5, 60)]


def test_parse_limits_rehomes_items_in_our_namespace() -> None:
    items = parse_limits([RateLimitItemPerSecond(3, namespace="OTHER"), "1/hour"], "x")
    assert {item.namespace for item in items} == {NAMESPACE}


def test_rule_with_item_objects() -> None:
    compiled = Rule("/x", [RateLimitItemPerMinute(7)]).compiled
    assert [i.amount for i in compiled.limits] == [7]


# --- templates ------------------------------------------------------------------------


@pytest.mark.parametrize("path", LOGIN_VARIANTS)
def test_no_variant_escapes_a_static_rule(path: str) -> None:
    rules = [Rule("/login", "5/minute", methods=["POST"])]
    assert matched_name(rules, path, "POST") == "/login"
    table = RuleTable(rules)
    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    assert table.match(RequestInfo.from_scope(scope)) is not None
    environ = {"REQUEST_METHOD": "post", "PATH_INFO": path}
    assert table.match(RequestInfo.from_environ(environ)) is not None


@pytest.mark.parametrize("template", ["/login/", "//login", "/./login", "/log%69n",
                                      "/a/../login"])
def test_template_is_normalised_like_requests(template: str) -> None:
    rule = Rule(template, "5/minute")
    assert rule.compiled.template == "/login"
    assert matched_name([rule], "/login") == "/login"
    assert matched_name([rule], "/login/") == "/login"


def test_template_with_params_is_normalised_around_them() -> None:
    rule = Rule("//items/./{id}/", "5/minute")
    assert rule.compiled.template == "/items/{id}"
    assert matched_name([rule], "/items/7") == "/items/{id}"


def test_dynamic_rule_cannot_be_escaped_by_traversal() -> None:
    rules = [Rule("/admin/{rest:path}", "1/minute")]
    for path in ("/admin/x", "/public/../admin/x", "//admin//x/", "/%61dmin/x",
                 "/admin/%2e/x", "/admin%2fx"):
        assert matched_name(rules, path) == "/admin/{rest:path}", path


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/items/1", True),
        ("/items/abc", True),
        ("/items/a.b", True),
        ("/items/%7Bid%7D", True),
        ("/items/1/", True),
        ("/items", False),
        ("/items/", False),
        ("/items/1/2", False),
        ("/items/1/edit", False),
        ("/itemsX/1", False),
        ("/x/items/1", False),
    ],
)
def test_str_parameter_is_one_segment(path: str, matches: bool) -> None:
    assert (match([Rule("/items/{id}", "1/minute")], path) is not None) is matches


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/items/0", True),
        ("/items/12345678901234567890", True),
        ("/items/abc", False),
        ("/items/-1", False),
        ("/items/1.5", False),
        ("/items/1a", False),
        ("/items/\u0661\u0662", False),  # Arabic-Indic digits are not [0-9]
        ("/items/\uff11", False),  # full-width digit one
        ("/items/1/2", False),
    ],
)
def test_int_parameter(path: str, matches: bool) -> None:
    assert (match([Rule("/items/{id:int}", "1/minute")], path) is not None) is matches


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/files/a", True),
        ("/files/a/b/c.txt", True),
        ("/files/a/b/", True),
        ("/files", False),
        ("/files/", False),
        ("/filesX/a", False),
    ],
)
def test_path_parameter_takes_the_rest(path: str, matches: bool) -> None:
    assert (match([Rule("/files/{p:path}", "1/minute")], path) is not None) is matches


def test_parameter_inside_a_segment() -> None:
    rules = [Rule("/api/v{version:int}/search", "1/minute")]
    assert match(rules, "/api/v2/search") is not None
    assert match(rules, "/api/vx/search") is None
    assert match(rules, "/api/v2/other") is None


def test_multiple_parameters() -> None:
    rules = [Rule("/api/{version}/users/{uid:int}/files/{p:path}", "1/minute")]
    assert match(rules, "/api/v1/users/42/files/a/b") is not None
    assert match(rules, "/api/v1/users/x/files/a") is None
    assert match(rules, "/api/v1/extra/users/42/files/a") is None


@pytest.mark.parametrize("template", ["/a.b/{x}", "/a+b/{x}", "/a(b)/{x}", "/a*/{x}",
                                      "/a|b/{x}", "/a$/{x}", "/a^b/{x}", "/[ab]/{x}"])
def test_static_text_is_not_a_regex(template: str) -> None:
    rule = Rule(template, "1/minute")
    literal = template.replace("{x}", "1")
    assert match([rule], literal) is not None
    for other in ("/aXb/1", "/ab/1", "/aab/1", "/a/1", "/b/1", "/aaaa/1"):
        if other != literal:
            assert match([rule], other) is None, (template, other)


# --- precedence -----------------------------------------------------------------------


def test_first_matching_rule_wins_dynamic_before_static() -> None:
    rules = [Rule("/items/{id}", "1/minute", name="dynamic"),
             Rule("/items/special", "2/minute", name="static")]
    assert matched_name(rules, "/items/special") == "dynamic"
    assert matched_name(rules, "/items/other") == "dynamic"


def test_first_matching_rule_wins_static_before_dynamic() -> None:
    rules = [Rule("/items/special", "2/minute", name="static"),
             Rule("/items/{id}", "1/minute", name="dynamic")]
    assert matched_name(rules, "/items/special") == "static"
    assert matched_name(rules, "/items/other") == "dynamic"


def test_first_of_two_dynamic_rules_wins() -> None:
    rules = [Rule("/{a}/{b}", "1/minute", name="first"),
             Rule("/items/{id:int}", "1/minute", name="second")]
    assert matched_name(rules, "/items/1") == "first"


def test_duplicate_static_rules_first_wins() -> None:
    rules = [Rule("/x", "1/minute", name="one"), Rule("/x", "2/minute", name="two")]
    assert matched_name(rules, "/x") == "one"


def test_static_rules_for_different_methods() -> None:
    rules = [Rule("/x", "1/minute", methods=["POST"], name="post"),
             Rule("/x", "1/minute", methods=["GET"], name="get")]
    assert matched_name(rules, "/x", "POST") == "post"
    assert matched_name(rules, "/x", "GET") == "get"
    assert matched_name(rules, "/x", "HEAD") == "get"
    assert matched_name(rules, "/x", "PUT") is None


def test_method_mismatch_on_static_falls_to_later_dynamic() -> None:
    rules = [Rule("/x", "1/minute", methods=["POST"], name="static-post"),
             Rule("/{any}", "1/minute", name="catch")]
    assert matched_name(rules, "/x", "GET") == "catch"
    assert matched_name(rules, "/x", "POST") == "static-post"


def test_method_mismatch_on_dynamic_falls_to_later_static() -> None:
    rules = [Rule("/{any}", "1/minute", methods=["DELETE"], name="catch-delete"),
             Rule("/x", "1/minute", name="static")]
    assert matched_name(rules, "/x", "GET") == "static"
    assert matched_name(rules, "/x", "DELETE") == "catch-delete"


def test_exempt_rule_listed_first_wins() -> None:
    rules = [Rule("/health", exempt=True), Rule("/{p:path}", "1/minute")]
    found = match(rules, "/health/")
    assert found is not None
    assert found.exempt
    found = match(rules, "/other")
    assert found is not None
    assert not found.exempt


def test_no_rule_matches() -> None:
    assert match([Rule("/login", "1/minute")], "/logout") is None
    assert match([], "/") is None


# --- methods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("methods", "method", "matches"),
    [
        (["GET"], "GET", True),
        (["GET"], "HEAD", True),
        (["get"], "HEAD", True),
        (["GET"], "POST", False),
        (["POST"], "POST", True),
        (["POST"], "post", True),
        (["POST"], "HEAD", False),
        (["POST"], "GET", False),
        (["HEAD"], "HEAD", True),
        (["HEAD"], "GET", False),
        (("PUT", "PATCH"), "PATCH", True),
        ({"DELETE"}, "DELETE", True),
        (None, "OPTIONS", True),
        (None, "TRACE", True),
        (None, "PROPFIND", True),
    ],
)
def test_methods(methods: Any, method: str, matches: bool) -> None:
    rules = [Rule("/x", "1/minute", methods=methods)]
    assert (match(rules, "/x", method) is not None) is matches
    dynamic = [Rule("/{p}", "1/minute", methods=methods)]
    assert (match(dynamic, "/x", method) is not None) is matches


def test_methods_from_a_generator() -> None:
    rules = [Rule("/x", "1/minute", methods=(m for m in ["GET", "POST"]))]
    assert match(rules, "/x", "POST") is not None
    assert match(rules, "/x", "HEAD") is not None
    assert match(rules, "/x", "PUT") is None


def test_lower_case_wsgi_method_does_not_escape_a_post_rule() -> None:
    table = RuleTable([Rule("/login", "5/minute", methods=["POST"])])
    info = RequestInfo.from_environ({"REQUEST_METHOD": "post", "PATH_INFO": "/login"})
    assert table.match(info) is not None


# --- compiled rules -------------------------------------------------------------------


def test_compiled_rule_fields() -> None:
    key = keys.shared("x")
    compiled = Rule("/r/{id}", "5/minute;100/hour", methods=["get"], key=key, cost=3,
                    name="reports").compiled
    assert compiled.template == "/r/{id}"
    assert compiled.methods == frozenset({"GET", "HEAD"})
    assert [i.amount for i in compiled.limits] == [5, 100]
    assert compiled.keys == (key,)
    assert compiled.cost == 3
    assert compiled.name == "reports"
    assert not compiled.exempt


def test_compiled_rule_defaults() -> None:
    compiled = Rule("/r/{id}/").compiled
    assert compiled.name == "/r/{id}"
    assert compiled.limits == ()
    assert compiled.keys == ()
    assert compiled.methods is None
    assert compiled.cost == 1


def test_key_sequence_and_callable_cost() -> None:
    def cost(request: RequestInfo) -> int:
        return 2

    a, b = keys.header("X-A"), keys.shared()
    compiled = Rule("/x", "1/minute", key=[a, b], cost=cost).compiled
    assert compiled.keys == (a, b)
    assert compiled.cost is cost


def test_rule_is_frozen() -> None:
    rule = Rule("/x", "1/minute")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.path = "/y"  # type: ignore[misc]


# --- the table index agrees with a linear scan ----------------------------------------

_TEMPLATES = ["/a", "/a/b", "/{x}", "/a/{x}", "/{x}/b", "/a/{x:int}", "/{p:path}", "/a/{p:path}",
              "/b", "/1", "/a/1"]
_METHOD_SETS = [None, ["GET"], ["POST"], ["DELETE", "PUT"]]
_PATHS = ["/", "/a", "/a/b", "/a/1", "/b", "/1", "/a/b/c", "/b/b", "/a/x", "/c"]


@given(
    st.lists(st.tuples(st.sampled_from(_TEMPLATES), st.sampled_from(range(len(_METHOD_SETS)))),
             max_size=8),
    st.sampled_from(_PATHS),
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
)
def test_table_matches_like_a_linear_scan(spec: list[tuple[str, int]], path: str,
                                          method: str) -> None:
    rules = [Rule(t, "1/minute", methods=_METHOD_SETS[m], name=f"r{i}")
             for i, (t, m) in enumerate(spec)]
    expected = next((r.compiled for r in rules if r.compiled.matches(path, method)), None)
    assert RuleTable(rules).match(RequestInfo(method, path)) is expected


def test_exempt_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError, match="exempt must be True or False"):
        Rule("/x", exempt="false")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0])
def test_redis_options_reject_non_finite(value: float) -> None:
    from ratelimit_mw import RedisOptions

    with pytest.raises(ConfigurationError, match="socket_timeout"):
        RedisOptions(socket_timeout=value)


def test_a_second_layer_of_escapes_cannot_leave_the_routes_rule() -> None:
    # The server decoded /items/..%252Fhealth once: the router serves /items/{id} with
    # id "..%2Fhealth"; decoding again would read /health, an exempt rule.
    rules = [Rule("/health", exempt=True), Rule("/items/{id}", "1/minute"),
             Rule("/admin/{rest:path}", "1/minute")]
    assert matched_name(rules, "/items/..%2Fhealth") == "/items/{id}"
    # No rule for the router's view: the decoded path's rule applies, as before...
    assert matched_name(rules, "/admin%2fx") == "/admin/{rest:path}"
    # ...but it cannot exempt the request (it gets the defaults instead).
    assert matched_name(rules, "/other/..%2Fhealth") is None
    table = RuleTable(rules)
    assert table.match(RequestInfo("GET", "/health")) is not None
