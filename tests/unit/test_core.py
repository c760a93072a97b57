"""The I/O-free core: Policy.plan, storage_key and Decision. Plain objects, no I/O."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from limits import RateLimitItemPerMinute

from ratelimit_mw import keys
from ratelimit_mw._core import Decision, Plan, PlanItem, Policy, Quota, storage_key
from ratelimit_mw._request import RequestInfo
from ratelimit_mw._rules import NAMESPACE, Rule
from ratelimit_mw.errors import ConfigurationError

PEER = "203.0.113.7"
OTHER = "198.51.100.9"


def req(path: str = "/", method: str = "GET", client: str | None = PEER,
        headers: dict[str, str] | None = None, query: str = "") -> RequestInfo:
    return RequestInfo(method, path, client=client, headers=headers, query=query)


def plan_of(policy: Policy, *args: Any, **kwargs: Any) -> Plan:
    plan = policy.plan(req(*args, **kwargs))
    assert plan is not None
    return plan


def key_of(policy: Policy, *args: Any, **kwargs: Any) -> str:
    keys_ = {item.key for item in plan_of(policy, *args, **kwargs).items}
    assert len(keys_) == 1  # every limit of one request shares one storage key
    return keys_.pop()


# --- storage_key ----------------------------------------------------------------------


def test_storage_key_docstring_example() -> None:
    assert storage_key("/login", "ip:203.0.113.7") == "{%2Flogin/ip:203.0.113.7}"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("a/b", "c"), ("a", "b/c")),
        (("a/", "b"), ("a", "/b")),
        (("{a}", "b"), ("%7Ba%7D", "b")),
        (("a}", "{b"), ("a", "b")),
        (("%2F", "x"), ("/", "x")),
        (("%", "x"), ("%25", "x")),
        (("a b", "c"), ("a+b", "c")),
        (("a b", "c"), ("a%20b", "c")),
        (("é", "x"), ("%C3%A9", "x")),
        (("é", "x"), ("\udcc3\udca9", "x")),  # surrogate-escaped bytes of 'é'
        (("",), ("", "")),
        (("a",), ("a", "")),
        (("x" * 300,), ("x" * 301,)),
        (("x" * 300,), ("%h" + "0" * 32,)),
        (("/items/{id}", "ip:1.2.3.4"), ("/items/{id}/ip:1.2.3.4",)),
    ],
)
def test_storage_key_distinguishes(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert storage_key(*a) != storage_key(*b)


def test_storage_key_hashes_long_parts() -> None:
    long_part = "k" * 10_000
    key = storage_key("/r", long_part)
    assert len(key) < 100
    assert long_part[:50] not in key
    assert key == storage_key("/r", long_part)  # deterministic
    assert key != storage_key("/r", long_part + "k")
    assert key != storage_key("/r", long_part[:-1] + "j")


def test_storage_key_is_one_hash_tag() -> None:
    key = storage_key("/a{b}", "c}{d", "{")
    assert key.startswith("{")
    assert key.endswith("}")
    assert "{" not in key[1:-1]
    assert "}" not in key[1:-1]


_parts_text = st.lists(st.one_of(st.characters(codec=None), st.characters(categories=["Cs"])),
                       max_size=20).map("".join)
_parts_tricky = st.lists(st.sampled_from(["/", "{", "}", "%", "%2F", "%7B", "%25", " ", "+",
                                          "a", "é", "\udcc3", "\udca9", "%h", "2", "F"]),
                         max_size=8).map("".join)
_parts_long = st.text(alphabet="ab/", min_size=195, max_size=210)
_part = st.one_of(_parts_text, _parts_tricky, _parts_long)
_tuples = st.lists(_part, min_size=1, max_size=4).map(tuple)


@given(_tuples, _tuples)
def test_storage_key_is_injective(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    if a != b:
        assert storage_key(*a) != storage_key(*b)
    else:
        assert storage_key(*a) == storage_key(*b)


_any_char = st.one_of(st.characters(codec=None), st.characters(categories=["Cs"]),
                      st.sampled_from("/{}% +\udcc3\udca9é"))


# Lists, not st.text(alphabet=...): the latter almost never draws surrogates.
@given(st.lists(_any_char, max_size=60).map("".join))
def test_short_parts_decode_back_exactly(part: str) -> None:
    # Escaping is reversible, so no two short parts can share an escaped form.
    escaped = storage_key(part)[1:-1]
    assert unquote(escaped, errors="surrogatepass") == part


@given(_tuples)
def test_storage_key_structure(parts: tuple[str, ...]) -> None:
    key = storage_key(*parts)
    assert key[0] == "{"
    assert key[-1] == "}"
    inner = key[1:-1]
    assert "{" not in inner
    assert "}" not in inner
    # '/' only between parts, never inside one.
    assert len(inner.split("/")) == len(parts)
    # Printable ASCII only: safe for any storage and for logs.
    assert all(" " < char <= "~" for char in key)
    key.encode("ascii")


# --- Policy.plan: namespaces ----------------------------------------------------------


def test_template_rule_shares_one_counter() -> None:
    policy = Policy(rules=[Rule("/items/{id}", "10/minute")])
    k1 = key_of(policy, "/items/1")
    assert k1 == key_of(policy, "/items/2") == key_of(policy, "/items/abc/")
    assert plan_of(policy, "/items/1").rule == "/items/{id}"
    assert k1 != key_of(policy, "/items/1", client=OTHER)


def test_rules_with_the_same_name_share_a_key() -> None:
    policy = Policy(rules=[Rule("/a", "10/minute", name="shared"),
                           Rule("/b/{x}", "10/minute", name="shared"),
                           Rule("/c", "10/minute")])
    assert key_of(policy, "/a") == key_of(policy, "/b/1")
    assert key_of(policy, "/a") != key_of(policy, "/c")
    assert plan_of(policy, "/b/1").rule == "shared"


def test_different_rules_have_different_keys() -> None:
    policy = Policy(default_limits="100/minute",
                    rules=[Rule("/a", "10/minute"), Rule("/b", "10/minute")])
    ks = {key_of(policy, "/a"), key_of(policy, "/b"), key_of(policy, "/other")}
    assert len(ks) == 3


def test_unmatched_paths_share_the_default_namespace() -> None:
    policy = Policy(default_limits="100/minute", rules=[Rule("/login", "5/minute")])
    plans = [plan_of(policy, p) for p in ("/", "/a", "/b/c", "/random/x/y", "/login/x")]
    assert {p.rule for p in plans} == {"default"}
    assert len({p.items[0].key for p in plans}) == 1
    assert plans[0].items[0].policy == "default"
    assert plans[0].items[0].limit.amount == 100
    assert key_of(policy, "/a") != key_of(policy, "/a", client=OTHER)


def test_no_match_and_no_defaults_is_unlimited() -> None:
    policy = Policy(rules=[Rule("/login", "5/minute")])
    assert policy.plan(req("/other")) is None
    assert Policy().plan(req("/")) is None


@pytest.mark.parametrize("path", ["/health", "/health/", "//health"])
def test_exempt_rule_gives_no_plan(path: str) -> None:
    policy = Policy(default_limits="1/minute", rules=[Rule("/health", exempt=True)])
    assert policy.plan(req(path)) is None


def test_a_second_layer_of_escapes_does_not_exempt() -> None:
    # The server decoded /heal%2574h once: no route serves /heal%74h, and decoding it
    # again must not make it the exempt /health (the defaults apply).
    policy = Policy(default_limits="1/minute", rules=[Rule("/health", exempt=True)])
    plan = policy.plan(req("/heal%74h"))
    assert plan is not None
    assert plan.rule == "default"


def test_exempt_for_some_methods_only() -> None:
    policy = Policy(default_limits="1/minute",
                    rules=[Rule("/health", methods=["GET"], exempt=True)])
    assert policy.plan(req("/health", "GET")) is None
    assert policy.plan(req("/health", "HEAD")) is None
    assert plan_of(policy, "/health", "POST").rule == "default"


def test_rule_without_limits_uses_defaults_in_its_own_namespace() -> None:
    policy = Policy(default_limits="100/minute;1000/hour", rules=[Rule("/search")])
    plan = plan_of(policy, "/search")
    assert plan.rule == "/search"
    assert [(i.limit.amount, i.limit.get_expiry()) for i in plan.items] == [(100, 60),
                                                                             (1000, 3600)]
    assert key_of(policy, "/search") != key_of(policy, "/elsewhere")


def test_login_variants_cannot_escape_the_rule() -> None:
    policy = Policy(default_limits="100/minute",
                    rules=[Rule("/login", "5/minute", methods=["POST"])])
    expected = key_of(policy, "/login", "POST")
    for path in ("/login/", "//login", "/./login", "/log%69n", "/a/../login", "/%2e%2e/login"):
        plan = plan_of(policy, path, "POST")
        assert plan.rule == "/login"
        assert plan.items[0].key == expected
        assert plan.items[0].limit.amount == 5
    assert plan_of(policy, "/login", "GET").rule == "default"


def test_limit_items_live_in_our_namespace() -> None:
    policy = Policy(default_limits=RateLimitItemPerMinute(3, namespace="X"),
                    rules=[Rule("/r", RateLimitItemPerMinute(1, namespace="Y"))])
    for path in ("/r", "/other"):
        assert {i.limit.namespace for i in plan_of(policy, path).items} == {NAMESPACE}


def test_plan_key_is_storage_key_of_name_and_identity() -> None:
    policy = Policy(rules=[Rule("/items/{id}", "10/minute")])
    plan = plan_of(policy, "/items/5")
    assert plan.identity == f"ip:{PEER}"
    assert plan.items[0].key == storage_key("/items/{id}", f"ip:{PEER}")


# --- Policy.plan: identities ----------------------------------------------------------


def test_default_identity_is_the_peer_and_ignores_spoofing() -> None:
    policy = Policy(default_limits="10/minute")
    base = key_of(policy, "/")
    for headers in ({"X-Forwarded-For": "1.2.3.4"}, {"Forwarded": "for=1.2.3.4"},
                    {"X-Real-IP": "1.2.3.4"}):
        assert key_of(policy, "/", headers=headers) == base
    assert plan_of(policy, "/").identity == f"ip:{PEER}"


def test_rule_key_then_policy_key_then_client_ip() -> None:
    policy = Policy(
        default_limits="10/minute",
        key=keys.header("X-User", hashed=False),
        rules=[Rule("/api", "5/minute", key=keys.api_key())],
    )
    both = {"X-API-Key": "k", "X-User": "u"}
    assert plan_of(policy, "/api", headers=both).identity.startswith("key:")
    assert plan_of(policy, "/api", headers={"X-User": "u"}).identity == "hdr:x-user:u"
    assert plan_of(policy, "/api").identity == f"ip:{PEER}"
    # The rule's key does not apply outside the rule.
    assert plan_of(policy, "/other", headers=both).identity == "hdr:x-user:u"
    assert plan_of(policy, "/other").identity == f"ip:{PEER}"


def test_key_sequence_on_policy() -> None:
    policy = Policy(default_limits="10/minute",
                    key=[keys.header("X-A", hashed=False), keys.header("X-B", hashed=False)])
    assert plan_of(policy, headers={"X-B": "b"}).identity == "hdr:x-b:b"
    assert plan_of(policy, headers={"X-A": "a", "X-B": "b"}).identity == "hdr:x-a:a"


def test_no_peer_still_has_an_identity() -> None:
    policy = Policy(default_limits="10/minute")
    assert plan_of(policy, client=None).identity == "peer:unknown"


def test_raw_api_key_never_reaches_the_plan() -> None:
    secret = "sk_live_SUPER-secret-value"
    policy = Policy(default_limits="10/minute", key=keys.api_key(query="api_key"))
    for kwargs in ({"headers": {"X-API-Key": secret}}, {"query": f"api_key={secret}"}):
        plan = plan_of(policy, "/", **kwargs)
        assert secret not in plan.identity
        assert all(secret not in item.key for item in plan.items)
        assert secret not in repr(plan)


def test_shared_key_is_one_counter_for_all_clients() -> None:
    policy = Policy(rules=[Rule("/export", "10/minute", key=keys.shared())])
    assert key_of(policy, "/export") == key_of(policy, "/export", client=OTHER)


def test_custom_identity_with_separators_cannot_collide() -> None:
    # A key function returning '/' or braces must not let two rules share a counter.
    policy = Policy(rules=[
        Rule("/a", "10/minute", key=lambda r: r.header("x-id")),
        Rule("/a/b", "10/minute", key=lambda r: r.header("x-id")),
    ])
    k1 = key_of(policy, "/a", headers={"x-id": "b/c"})
    k2 = key_of(policy, "/a/b", headers={"x-id": "c"})
    assert k1 != k2


# --- Policy.plan: cost and policy names -----------------------------------------------


def test_static_cost() -> None:
    policy = Policy(rules=[Rule("/r", "100/hour;10/minute", cost=10)])
    assert [item.cost for item in plan_of(policy, "/r").items] == [10, 10]


def test_callable_cost_gets_the_request() -> None:
    seen: list[RequestInfo] = []

    def cost(request: RequestInfo) -> int:
        seen.append(request)
        return int(request.header("x-batch") or 1)

    policy = Policy(rules=[Rule("/batch", "100/hour", cost=cost)])
    request = req("/batch", headers={"X-Batch": "7"})
    plan = policy.plan(request)
    assert plan is not None
    assert plan.items[0].cost == 7
    assert seen == [request]


@pytest.mark.parametrize("bad", [0, -5])
def test_callable_cost_never_refunds(bad: int) -> None:
    # A cost derived from the request must never go below 1: a negative cost would
    # decrement the counter in limits' storages and let a client reset its own limit.
    policy = Policy(rules=[Rule("/batch", "100/hour", cost=lambda r: bad)])
    assert plan_of(policy, "/batch").items[0].cost == 1


@pytest.mark.parametrize("bad", [True, 1.5, "3", None])
def test_callable_cost_must_return_an_int(bad: object) -> None:
    policy = Policy(rules=[Rule("/batch", "100/hour", cost=lambda r: bad)])
    with pytest.raises(ConfigurationError, match="cost"):
        policy.plan(req("/batch"))


def test_default_cost_is_one() -> None:
    policy = Policy(default_limits="1/second")
    assert plan_of(policy).items[0].cost == 1


def test_policy_names() -> None:
    policy = Policy(default_limits="10/second;1000/hour",
                    rules=[Rule("/login", "5/minute"),
                           Rule("/search", "10/second;1000/day", name="search")])
    assert [i.policy for i in plan_of(policy, "/login").items] == ["/login"]
    assert [i.policy for i in plan_of(policy, "/search").items] == ["search-1s", "search-86400s"]
    assert [i.policy for i in plan_of(policy, "/x").items] == ["default-1s", "default-3600s"]


def test_policy_names_are_unique_within_a_plan() -> None:
    policy = Policy(rules=[Rule("/r", "10/minute;100/minute;1000/hour")])
    names = [i.policy for i in plan_of(policy, "/r").items]
    assert len(set(names)) == len(names) == 3


# --- Policy: configuration errors -----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rules": [Rule("/x")]}, r"Rule\('/x'\) has no limits.*default_limits"),
        ({"rules": [Rule("/x", "1/minute"), Rule("/y/{z}")]}, r"'/y/\{z\}'"),
        ({"default_limits": "often"}, "default_limits"),
        ({"default_limits": 10}, "default_limits"),
        ({"default_limits": "1/minute", "key": "client_ip"}, "not callable"),
        ({"default_limits": "1/minute", "key": 5}, "not callable"),
        ({"default_limits": "1/minute", "key": [keys.shared(), None]}, "not callable"),
        ({"rules": ["/x"]}, "not a Rule"),
    ],
)
def test_policy_bad_configuration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Policy(**kwargs)


def test_exempt_rule_needs_no_limits() -> None:
    policy = Policy(rules=[Rule("/health", exempt=True)])
    assert policy.plan(req("/health")) is None
    assert policy.plan(req("/x")) is None


def test_policy_accepts_one_rule_and_generators() -> None:
    assert plan_of(Policy(rules=Rule("/a", "1/minute")), "/a").rule == "/a"
    rules = (Rule(p, "1/minute") for p in ("/a", "/b"))
    assert plan_of(Policy(rules=rules), "/b").rule == "/b"


# --- Decision.violated ----------------------------------------------------------------


def _decision(allowed: list[bool], storage_error: bool = False) -> Decision:
    items = tuple(PlanItem(RateLimitItemPerMinute(5 * (i + 1)), "{k}", 1, f"p{i}")
                  for i in range(len(allowed)))
    quotas = tuple(Quota(a, item.limit, 0 if not a else 3, 1000.0, 0.0 if a else 5.0)
                   for a, item in zip(allowed, items, strict=True))
    return Decision(all(allowed), Plan("r", "ip:x", items), () if storage_error else quotas,
                    storage_error)


def test_violated_names_refused_policies_in_order() -> None:
    assert _decision([True, True]).violated == ()
    assert _decision([False, True]).violated == ("p0",)
    assert _decision([True, False, False]).violated == ("p1", "p2")


def test_violated_after_a_storage_error_is_empty() -> None:
    # The storage failed: no quotas, nothing known to be violated (and no exception).
    decision = _decision([False, False], storage_error=True)
    assert decision.violated == ()


@pytest.mark.parametrize("spec", ["5/minute", "10 per 2 hours", "1/second", "7/day"])
@pytest.mark.parametrize("key", ["{a/b}", "{%2Flogin/ip:1.2.3.4}", "plain"])
def test_limit_key_is_limits_key_for(spec: str, key: str) -> None:
    from ratelimit_mw._core import limit_key
    from ratelimit_mw._rules import parse_limits

    for item in parse_limits(spec, "test"):
        assert limit_key(item, key) == item.key_for(key)
        assert limit_key(item, key) == item.key_for(key)  # cached the second time


def test_plan_key_equals_storage_key() -> None:
    policy = Policy(default_limits="1/minute", rules=[Rule("/items/{id}", "5/minute")])
    plan = policy.plan(RequestInfo("GET", "/items/9", client="203.0.113.7"))
    assert plan is not None
    assert plan.items[0].key == storage_key("/items/{id}", "ip:203.0.113.7")


def test_rules_sharing_a_name_keep_their_own_limits() -> None:
    # The plan cache once keyed plans by the shared name: /b got /a's limits.
    policy = Policy(rules=[Rule("/a", "5/minute", name="x"), Rule("/b", "10/minute", name="x")])
    a = policy.plan(RequestInfo("GET", "/a", client="203.0.113.7"))
    b = policy.plan(RequestInfo("GET", "/b", client="203.0.113.7"))
    assert a is not None
    assert b is not None
    assert [i.limit.amount for i in a.items] == [5]
    assert [i.limit.amount for i in b.items] == [10]
    assert a.items[0].key == b.items[0].key  # one counter namespace, as documented


def test_shadow_global_and_per_rule() -> None:
    policy = Policy(default_limits="1/minute", shadow=True,
                    rules=[Rule("/strict", "1/minute", shadow=False), Rule("/x", "1/minute")])

    def shadow_of(path: str) -> bool:
        plan = policy.plan(RequestInfo("GET", path, client="203.0.113.7"))
        assert plan is not None
        return plan.shadow

    assert (shadow_of("/strict"), shadow_of("/x"), shadow_of("/other")) == (False, True, True)
    assert Policy(rules=[Rule("/y", "1/minute", shadow=True)]).plan(
        RequestInfo("GET", "/y", client="203.0.113.7")).shadow is True  # type: ignore[union-attr]
    with pytest.raises(ConfigurationError, match="shadow"):
        Rule("/z", "1/minute", shadow="yes")  # type: ignore[arg-type]


def test_plans_carry_their_limits_keys() -> None:
    from ratelimit_mw._core import item_key, limit_key

    policy = Policy(default_limits="5/minute;100/hour", rules=[Rule("/a/{id}", "1/second")])
    for path in ("/a/1", "/b"):
        plan = policy.plan(RequestInfo("GET", path, client="203.0.113.7"))
        assert plan is not None
        for item in plan.items:
            assert item.limit_key == limit_key(item.limit, item.key)
            assert item_key(item) == item.limit_key
    # A hand-built item without one still gets the right key.
    bare = plan.items[0]._replace(limit_key="")
    assert item_key(bare) == limit_key(bare.limit, bare.key)


# -- exempt_when ---------------------------------------------------------------------------


def test_policy_exempt_when_applies_to_every_request() -> None:
    seen: list[str] = []

    def internal(request: RequestInfo) -> bool:
        seen.append(request.path)
        return request.client == "10.0.0.1"

    policy = Policy(default_limits="5/minute", rules=[Rule("/login", "1/minute")],
                    exempt_when=internal)
    assert policy.plan(RequestInfo("GET", "/login", client="10.0.0.1")) is None
    assert policy.plan(RequestInfo("GET", "/other", client="10.0.0.1")) is None
    assert policy.plan(RequestInfo("GET", "/login", client="203.0.113.7")) is not None
    assert seen == ["/login", "/other", "/login"]


def test_rule_exempt_when_is_asked_only_for_the_requests_it_matches() -> None:
    seen: list[str] = []

    def internal(request: RequestInfo) -> bool:
        seen.append(request.path)
        return request.client == "10.0.0.1"

    policy = Policy(default_limits="5/minute",
                    rules=[Rule("/login", "1/minute", exempt_when=internal)])
    assert policy.plan(RequestInfo("POST", "/login", client="10.0.0.1")) is None
    other = policy.plan(RequestInfo("GET", "/other", client="10.0.0.1"))
    assert other is not None
    assert other.rule == "default"
    limited = policy.plan(RequestInfo("POST", "/login", client="203.0.113.7"))
    assert limited is not None
    assert limited.rule == "/login"
    assert [item.limit.amount for item in limited.items] == [1]
    assert seen == ["/login", "/login"]


def test_rules_without_a_predicate_carry_no_exempt_flag() -> None:
    # Policy.plan reads one flag per matched rule: plain rules must leave it off.
    assert Rule("/a", "1/minute").compiled.may_exempt is False
    assert Rule("/a", exempt=True).compiled.may_exempt is True
    assert Rule("/a", "1/minute", exempt_when=bool).compiled.may_exempt is True


@pytest.mark.parametrize(("build", "match"), [
    (lambda: Rule("/a", "1/minute", exempt_when=5), r"Rule\('/a'\): exempt_when=5"),
    (lambda: Rule("/a", exempt=True, exempt_when=bool), r"Rule\('/a'\): exempt=True"),
    (lambda: Policy(default_limits="1/minute", exempt_when="yes"), "exempt_when='yes'"),
])
def test_exempt_when_is_checked_at_construction(build: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        build()


def test_a_rule_with_exempt_when_still_needs_limits() -> None:
    with pytest.raises(ConfigurationError, match="no limits"):
        Policy(rules=[Rule("/a", exempt_when=bool)])
