"""Layered limits (`Limit`) and global limits, as `Policy` plans them: pure, no storage."""

from __future__ import annotations

import pytest

from ratelimit_mw import ConfigurationError, Limit, RequestInfo, Rule, keys
from ratelimit_mw._core import Policy, layer_key, storage_key
from ratelimit_mw._rules import parse_layers

TENANT = keys.header("X-Tenant")
EVERYONE = keys.shared()


def request(path: str = "/search", client: str = "203.0.113.7",
            tenant: str | None = "acme") -> RequestInfo:
    headers = {"x-tenant": tenant} if tenant is not None else {}
    return RequestInfo("GET", path, client=client, headers=headers)


def layered() -> Policy:
    return Policy(
        default_limits="100/minute",
        rules=[Rule("/search", [Limit("10/second"),
                                Limit("1000/hour", key=TENANT, name="tenant")])],
        global_limits=[Limit("5000/minute", key=EVERYONE, name="global")])


def test_each_layer_counts_its_own_identity() -> None:
    plan = layered().plan(request())
    assert plan is not None
    assert [(i.policy, i.limit.amount) for i in plan.items] == [
        ("/search", 10), ("tenant", 1000), ("global", 5000)]
    user, tenant, everyone = (item.key for item in plan.items)
    assert user == storage_key("/search", "ip:203.0.113.7")
    assert tenant.startswith("{%2Fsearch/hdr:x-tenant:")
    assert tenant.endswith("}/@tenant")
    assert everyone == layer_key("", "shared:all", name="global")
    assert plan.identity == "ip:203.0.113.7"


def test_a_plain_limit_keeps_the_counter_of_a_plain_spec() -> None:
    # Rewriting Rule("/x", "10/second") with a Limit must not move its counters.
    plain = Policy(rules=[Rule("/x", "10/second;100/hour")]).plan(request("/x"))
    wrapped = Policy(rules=[Rule("/x", [Limit("10/second"), Limit("100/hour")])]).plan(
        request("/x"))
    assert plain is not None
    assert wrapped is not None
    assert plain.items == wrapped.items


def test_the_same_tenant_shares_a_counter_across_users() -> None:
    policy = layered()
    first, second = policy.plan(request(client="198.51.100.1")), policy.plan(
        request(client="198.51.100.2"))
    assert first is not None
    assert second is not None
    assert first.items[0].key != second.items[0].key  # users: one counter each
    assert first.items[1].key == second.items[1].key  # the tenant: one counter
    assert first.items[2].key == second.items[2].key  # everyone


def test_global_limits_count_across_routes_and_apply_without_defaults() -> None:
    policy = Policy(rules=[Rule("/a", "10/minute")], global_limits="1000/hour")
    on_a, elsewhere = policy.plan(request("/a")), policy.plan(request("/b"))
    assert on_a is not None
    assert elsewhere is not None
    assert [i.policy for i in on_a.items] == ["/a", "global"]
    # No rule, no default_limits: the global limit alone, counted per client (the
    # middleware's key) on one counter for every route.
    assert [i.policy for i in elsewhere.items] == ["global"]
    assert on_a.items[1].key == elsewhere.items[0].key == storage_key(
        "", "ip:203.0.113.7")


def test_exempt_requests_skip_the_global_limits_too() -> None:
    policy = Policy(rules=[Rule("/health", exempt=True),
                           Rule("/internal", "10/minute",
                                exempt_when=lambda r: r.client == "10.0.0.1")],
                    global_limits="1000/hour", exempt_when=lambda r: r.path == "/skip")
    assert policy.plan(request("/health")) is None
    assert policy.plan(request("/skip")) is None
    assert policy.plan(request("/internal", client="10.0.0.1")) is None
    plan = policy.plan(request("/internal"))
    assert plan is not None
    assert len(plan.items) == 2


def test_a_limits_function_returning_none_leaves_the_global_limits() -> None:
    def tier(req: RequestInfo) -> str | None:
        return None if req.header("x-plan") == "internal" else "10/minute"

    with_globals = Policy(rules=[Rule("/x", tier)], global_limits="1000/hour")
    internal = RequestInfo("GET", "/x", client="203.0.113.7",
                           headers={"x-plan": "internal"})
    plan = with_globals.plan(internal)
    assert plan is not None
    assert [i.policy for i in plan.items] == ["global"]
    assert Policy(rules=[Rule("/x", tier)]).plan(internal) is None


def test_a_limits_function_may_return_layers_and_they_are_built_once() -> None:
    free = [Limit("10/minute"), Limit("100/hour", key=TENANT, name="tenant")]
    pro = [Limit("100/minute"), Limit("10000/hour", key=TENANT, name="tenant")]

    def plan_of(req: RequestInfo) -> list[Limit]:
        return pro if req.header("x-plan") == "pro" else free

    policy = Policy(rules=[Rule("/x", plan_of)])
    first = policy.plan(request("/x"))
    again = policy.plan(request("/x"))
    assert first is not None
    assert first is again
    assert [(i.policy, i.limit.amount) for i in first.items] == [("/x", 10),
                                                               ("tenant", 100)]
    paid = policy.plan(RequestInfo("GET", "/x", client="203.0.113.7",
                                   headers={"x-plan": "pro", "x-tenant": "acme"}))
    assert paid is not None
    assert [i.limit.amount for i in paid.items] == [100, 10000]
    # The tenant's counter is the same whichever plan it is on, but per limit.
    assert paid.items[1].key == first.items[1].key


def test_a_key_that_answers_none_falls_back_to_the_middleware_key() -> None:
    plan = layered().plan(request(tenant=None))
    assert plan is not None
    assert plan.items[1].key == layer_key("/search", "ip:203.0.113.7", name="tenant")


def test_named_layers_never_share_a_counter_with_unnamed_ones() -> None:
    # Identities are escaped ('}' included), so no identity can forge a named key.
    assert storage_key("/x", "a}/@n") != layer_key("/x", "a", name="n")
    assert storage_key("/x", "a}/@n") == "{%2Fx/a%7D%2F@n}"
    plan = Policy(rules=[Rule("/x", [Limit("1/second"), Limit("1/second", name="n")])],
                  ).plan(request("/x"))
    assert plan is not None
    assert [item.key for item in plan.items] == [
        storage_key("/x", "ip:203.0.113.7"), layer_key("/x", "ip:203.0.113.7", name="n")]


def test_policy_names_stay_unique_across_layers() -> None:
    policy = Policy(rules=[Rule("/x", [Limit("10/minute", name="global")])],
                    global_limits=[Limit("1000/hour", key=EVERYONE)])
    plan = policy.plan(request("/x"))
    assert plan is not None
    names = [item.policy for item in plan.items]
    assert len(set(names)) == 2
    assert names[0] == "global"


def test_several_rates_of_one_layer_are_named_by_window() -> None:
    plan = Policy(rules=[Rule("/x", [Limit("10/second;1000/hour", key=TENANT,
                                           name="tenant")])]).plan(request("/x"))
    assert plan is not None
    assert [item.policy for item in plan.items] == ["tenant-1s", "tenant-3600s"]


def test_limits_with_one_name_and_key_merge_into_one_layer() -> None:
    layers = parse_layers([Limit("10/second"), "1000/hour", Limit("5/second", key=TENANT,
                                                                  name="t")], "x")
    assert [(layer.name, [i.amount for i in layer.items]) for layer in layers] == [
        (None, [10, 1000]), ("t", [5])]


@pytest.mark.parametrize("spec", [
    [Limit("10/second"), Limit("1000/hour", key=TENANT)],
    [Limit("10/second", key=TENANT, name="t"), Limit("1/second", key=EVERYONE, name="t")],
])
def test_one_name_for_two_identities_is_refused(spec: list[Limit]) -> None:
    with pytest.raises(ConfigurationError, match="count different identities; give each "
                                                 "a name="):
        Rule("/x", spec)
    with pytest.raises(ConfigurationError, match="global_limits"):
        Policy(global_limits=spec)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Limit("ten a minute"), "is not a rate limit"),
    (lambda: Limit([]), "give rates"),
    (lambda: Limit("10/minute", name=""), "name must be a non-empty string"),
    (lambda: Limit("10/minute", key="X-Tenant"), "is not callable"),
    (lambda: Limit([Limit("10/minute")]), "list Limits side by side"),
    (lambda: Policy(global_limits=lambda r: "10/minute"), "global_limits"),
    (lambda: Rule("/x", [Limit("10/minute"), 5]), r"Rule\(./x.\): limits must be"),
])
def test_bad_limits_fail_at_construction(build: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build()  # type: ignore[operator]


def test_limits_are_values() -> None:
    assert Limit("10/minute", key=TENANT, name="t") == Limit(["10/minute"], key=TENANT,
                                                           name="t")
    assert hash(Limit("10/minute")) == hash(Limit("10 per minute"))
    assert Limit("10/minute") != Limit("10/minute", name="t")
