"""The I/O-free core: from a request to a plan, and the types of plans and decisions.

Everything here is pure: the ASGI and WSGI adapters call `Policy.plan`, hand the
plan to a limiter (the only I/O) and render the `Decision` it returns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from limits import RateLimitItem

from ._request import RequestInfo
from ._rules import (
    CompiledRule,
    ExemptFunc,
    Limit,
    LimitsFunc,
    LimitsSpec,
    Rule,
    RuleTable,
    exempt_predicate,
    key_functions,
    limits_function,
    parse_layers,
)
from .errors import ConfigurationError
from .keys import KeyFunc, client_ip

if TYPE_CHECKING:
    from ._response import Settle
    from ._strategies import StrategySpec

__all__ = ["Decision", "Penalty", "Plan", "PlanItem", "Policy", "Quota", "all_allowed",
           "concurrency_key", "item_key", "layer_key", "limit_key", "penalized", "penalty_key",
           "storage_key"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._:@!$&'()*+,;=~-]")
_MAX_PART = 200


def storage_key(*identifiers: str) -> str:
    """Join *identifiers* into one storage identifier that no other tuple can produce.

    ``limits`` joins key parts with an unescaped ``/``, so ``("a/b", "c")`` and
    ``("a", "b/c")`` would collide there. Each part is percent-escaped (``/``, ``{``,
    ``}``, ``%``, spaces, non-ASCII) or, when long, hashed; the whole is wrapped in
    ``{...}`` so that every limit of one request shares a Redis Cluster hash tag.

    >>> storage_key("/login", "ip:203.0.113.7")
    '{%2Flogin/ip:203.0.113.7}'
    """
    return "{" + "/".join(_escape(part) for part in identifiers) + "}"


def layer_key(*identifiers: str, name: str | None = None) -> str:
    """The storage identifier of *identifiers*' counters in the layer *name*.

    An unnamed layer is `storage_key` (owner, identity), the counter a plain rule has
    always had. A named layer adds ``/@name`` after the hash tag, so the layers of one
    identity stay in one Redis Cluster slot (one script call) and never meet an unnamed
    counter: an escaped part never contains ``}``.

    >>> layer_key("/search", "ip:203.0.113.7", name="daily")
    '{%2Fsearch/ip:203.0.113.7}/@daily'
    """
    key = storage_key(*identifiers)
    return key if name is None else key + "/" + _escape("@" + name)


def _escape(part: str) -> str:
    if len(part) > _MAX_PART:
        import hashlib

        # '%' never survives escaping unencoded, so '%h…' cannot equal an escaped part.
        return "%h" + hashlib.blake2b(part.encode("utf-8", "surrogatepass"),
                                      digest_size=16).hexdigest()
    if _UNSAFE.search(part) is None:
        return part
    # 'surrogatepass', not 'surrogateescape': the latter encodes '\udcc3\udca9' to the
    # bytes of 'é', so two different identities shared one key. surrogatepass gives
    # every str its own byte string (and never raises on a lone surrogate).
    return quote(part, safe=":@!$&'()*+,;=~", errors="surrogatepass")


class PlanItem(NamedTuple):
    """One limit to apply: the item, the storage identifier, the cost, the policy name.

    ``limit_key`` is ``limits``' key for the pair (`limit_key`), computed once when
    the plan is built; ``""`` when unknown (it is then computed where needed).
    ``strategy`` is the rule's own (``Rule(strategy=...)``, a concurrency lease, a
    calendar window); ``None``: the limiter's. ``option`` is what that strategy needs
    besides the rate: GCRA's burst, a lease's timeout in ms, a calendar's time zone.
    """

    limit: RateLimitItem
    key: str
    cost: int
    policy: str
    limit_key: str = ""
    strategy: StrategySpec | None = None
    option: Any = 0


class Penalty(NamedTuple):
    """A rule's penalty box for one identity: refused for *ms* once a limit refuses.

    *key* is the identity's penalty counter (in its Cluster slot); only the first
    *triggers* limits of the plan (the rule's own, not the global ones) send it there.
    """

    ms: int
    key: str
    triggers: int


_CONCURRENCY_SUFFIX = "}/!concurrency"


def concurrency_key(owner: str, identity: str) -> str:
    """The storage identifier of *identity*'s leases under the rule *owner*.

    >>> concurrency_key("/export", "ip:203.0.113.7")
    '{%2Fexport/ip:203.0.113.7}/!concurrency'
    """
    return storage_key(owner, identity)[:-1] + _CONCURRENCY_SUFFIX


def penalty_key(owner: str, identity: str) -> str:
    """The storage identifier of *identity*'s penalty under the rule *owner*.

    >>> penalty_key("/login", "ip:203.0.113.7")
    '{%2Flogin/ip:203.0.113.7}/!penalty'
    """
    return storage_key(owner, identity) + "/!penalty"


class Plan(NamedTuple):
    """Every limit one request is subject to; the limiter checks them in one call."""

    rule: str
    identity: str
    items: tuple[PlanItem, ...]
    #: Shadow mode: count and report as usual, never refuse (how a new limit is tried).
    shadow: bool = False
    #: The rule's ``count_when`` / ``response_cost``: the reservation is settled once
    #: the response starts. ``None``: what is checked counts.
    settle: Settle | None = None
    #: The rule's ``penalty`` for this identity, decided in the same storage call.
    penalty: Penalty | None = None
    #: Whether an admitted request takes a lease (the rule has ``concurrency=``), which
    #: the middleware releases when the response ends.
    lease: bool = False


class Quota(NamedTuple):
    """The state of one limit after a hit (or a peek).

    ``reset_at`` is an epoch time when the window frees room; ``retry_after`` the seconds
    to wait before a request of the same cost can pass (0 when allowed).
    """

    allowed: bool
    limit: RateLimitItem
    remaining: int
    reset_at: float
    retry_after: float


class Decision(NamedTuple):
    """What the limiter decided for one request, one `Quota` per plan item.

    Available to the app as ``scope["state"]["ratelimit"]`` (ASGI) or
    ``environ["ratelimit_mw.decision"]`` (WSGI). ``storage_error`` is true when the
    storage failed and the ``on_storage_error`` policy decided instead: ``quotas`` are
    then the per-process fallback's (``"memory"``) or empty (``"allow"``, ``"deny"``).
    """

    allowed: bool
    plan: Plan
    quotas: tuple[Quota, ...]
    storage_error: bool = False
    #: What settling this decision's reservation needs (`Settle`): per limit, the time
    #: it was decided and its strategy's mark; empty where there is nothing to settle.
    token: tuple[int, ...] = ()
    #: A refusal the storage made earlier, repeated by this process without asking
    #: (``retry_after`` counted down); see the limiters' ``local_denials``.
    local: bool = False
    #: The lease this request holds on its concurrency limits ("" when none): release
    #: it when the response ends (the limiters' ``release``).
    lease: str = ""

    @property
    def violated(self) -> tuple[str, ...]:
        """Names of the policies this request exceeded."""
        if not self.quotas:
            # A storage error leaves no quotas: nothing is known to be violated, and an app
            # reading the decision gets an empty tuple rather than an error.
            return ()
        return tuple(item.policy for item, quota in zip(self.plan.items, self.quotas,
                                                        strict=True) if not quota.allowed)


def all_allowed(quotas: Sequence[Quota]) -> bool:
    """Whether every quota allowed its request (a loop, not ``all()``: the request path
    builds no generator for it)."""
    for quota in quotas:  # noqa: SIM110  (see the docstring)
        if not quota.allowed:
            return False
    return True


def penalized(quotas: tuple[Quota, ...], held_ms: int, now: float) -> tuple[Quota, ...]:
    """*quotas* while their identity serves a penalty of *held_ms* more: all refused, no
    room left, and no retry before the penalty ends."""
    until = now + held_ms / 1000
    return tuple(Quota(False, q.limit, 0, max(q.reset_at, until),
                       max(q.retry_after, held_ms / 1000)) for q in quotas)


def _policy_names(name: str, limits: Sequence[RateLimitItem]) -> tuple[str, ...]:
    if len(limits) == 1:
        return (name,)
    names = tuple(f"{name}-{item.get_expiry()}s" for item in limits)
    if len(set(names)) < len(names):
        # Two limits with one window ("10/minute;100/minute") got the same name, so the
        # RateLimit header could not tell their members apart: name the amount too.
        names = tuple(f"{name}-{item.amount}-{item.get_expiry()}s" for item in limits)
        if len(set(names)) < len(names):
            names = tuple(f"{n}-{i}" for i, n in enumerate(names))
    return names


class _Layer(NamedTuple):
    """One identity's limits in a request's plan, compiled."""

    keys: tuple[KeyFunc, ...]  # the identity: the first non-None answer
    #: The storage key is prefix + the escaped identity + suffix (`layer_key`).
    prefix: str
    suffix: str
    limits: tuple[RateLimitItem, ...]
    policies: tuple[str, ...]
    strategy: StrategySpec | None = None  # the plan items' (`PlanItem`)
    option: Any = 0


def _identity(keys: tuple[KeyFunc, ...], request: RequestInfo) -> str:
    """The first identity *keys* give *request*."""
    for function in keys:
        identity = function(request)
        if identity is not None:
            return identity
    raise AssertionError("a key chain ends with client_ip(), which always answers")


def _items(layer: _Layer, identity: str, cost: int) -> tuple[PlanItem, ...]:
    """The plan items of *layer* for *identity*."""
    key = layer.prefix + _escape(identity) + layer.suffix  # layer_key(owner, identity, name)
    return tuple(PlanItem(limit, key, cost, policy, limit_key(limit, key), layer.strategy,
                          layer.option)
                 for limit, policy in zip(layer.limits, layer.policies, strict=True))


class _Entry(NamedTuple):
    rule: CompiledRule | None
    settle: Settle | None
    penalty: int  # ms, 0 for none
    #: The request's layers: its own, then the global ones. Empty when *function*
    #: chooses the limits per request (its layers are then built per spec, `_parsed`).
    layers: tuple[_Layer, ...]
    function: LimitsFunc | None
    keys: tuple[KeyFunc, ...]  # the rule's key chain
    name: str
    shadow: bool
    lease: bool  # the rule has a concurrency limit (`Plan.lease`)


#: The owner of the global limits' counters: no rule is named "" (names are checked
#: non-empty), so their storage keys cannot meet a rule's.
_GLOBAL_OWNER = ""
_GLOBAL_NAME = "global"


def _layers(owner: str, label: str, limits: Sequence[Limit], keys: tuple[KeyFunc, ...],
            base: tuple[KeyFunc, ...], more: tuple[_Layer, ...] = (),
            rule: CompiledRule | None = None) -> tuple[_Layer, ...]:
    """*limits* of *owner* as layers, then *rule*'s concurrency limit, then *more* (the
    global ones).

    An unnamed layer counts for *keys* in *owner*'s namespace, as a rule always has; a
    named one in a namespace of its own under *owner* (`layer_key`); a concurrency
    limit's leases beside them (`concurrency_key`). The rates count in *rule*'s strategy
    (``None``: the limiter's). Policy names (the ``RateLimit`` members) are the layer's
    name, else *label*, made unique across the whole request.
    """
    strategy = None if rule is None else rule.strategy
    option = 0 if rule is None else rule.option
    layers = [_Layer(
        (*limit.keys, *base) if limit.keys else keys,
        "{" + _escape(owner) + "/",
        "}" if limit.name is None else "}/" + _escape("@" + limit.name),
        limit.items, _policy_names(limit.name or label, limit.items), strategy, option)
        for limit in limits]
    if rule is not None and rule.concurrency is not None:
        from ._strategies import CONCURRENCY

        layers.append(_Layer(keys, "{" + _escape(owner) + "/", _CONCURRENCY_SUFFIX,
                             (rule.concurrency,), (f"{label}-concurrency",), CONCURRENCY,
                             rule.concurrency_ms))
    layers += more
    names = [policy for layer in layers for policy in layer.policies]
    if len(set(names)) < len(names):
        # Two layers chose the same name (a rule's Limit named like a global one): the
        # headers must still tell their members apart.
        seen: dict[str, int] = {}
        unique = []
        for policy in names:
            seen[policy] = seen.get(policy, 0) + 1
            unique.append(policy if seen[policy] == 1 else f"{policy}-{seen[policy]}")
        position = iter(unique)
        layers = [layer._replace(policies=tuple(next(position) for _ in layer.policies))
                  for layer in layers]
    return tuple(layers)


_SUFFIXES: dict[RateLimitItem, str] = {}


def limit_key(limit: RateLimitItem, key: str) -> str:
    """``limit.key_for(key)`` — limits' key for one identifier — with the limit's part
    computed once per limit instead of on every request."""
    suffix = _SUFFIXES.get(limit)
    if suffix is None:
        if len(_SUFFIXES) > 4096:  # limits come from configuration; bound it anyway
            _SUFFIXES.clear()
        suffix = _SUFFIXES[limit] = (
            f"/{limit.amount}/{limit.multiples}/{limit.GRANULARITY.name}")
    return f"{limit.namespace}/{key}{suffix}"


def item_key(item: PlanItem) -> str:
    """The ``limits`` key of *item*: the one its plan was built with, else computed."""
    return item.limit_key or limit_key(item.limit, item.key)


_DEFAULT_NAME = "default"
_PLAN_CACHE = 65536
#: Distinct specs a limits function may return before the parsed ones are forgotten.
_SPEC_CACHE = 4096


def _checked_cost(cost: object, rule: str) -> int:
    # A cost function's result is checked, and below 1 it counts as 1: limits increments
    # by the cost, so a negative cost (say one derived from a client header) would
    # decrement the counter and let a client refund its own quota.
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise ConfigurationError(f"Rule({rule!r}): the cost function returned {cost!r}; "
                                 "it must return a whole number")
    return max(1, cost)


def _spec_key(spec: object, name: str) -> str | RateLimitItem | Limit | tuple[Any, ...]:
    """*spec*, hashable: what a limits function returned, as a cache key."""
    if isinstance(spec, str | RateLimitItem | Limit):
        return spec
    if isinstance(spec, list | tuple) and all(
            isinstance(part, str | RateLimitItem | Limit) for part in spec):
        return tuple(spec)
    raise ConfigurationError(f"limits function of {name!r}: returned {spec!r}; return a "
                             "spec like '10/minute', a list of them, or None")


class Policy:
    """Rules, defaults and keys compiled into a function from request to `Plan`.

    Shared by the ASGI and the WSGI middleware; pure, so it is tested with plain objects.

    Example::

        policy = Policy(default_limits="100/minute", rules=[Rule("/login", "5/minute")])
        plan = policy.plan(RequestInfo("POST", "/login", client="203.0.113.7"))
        [item.policy for item in plan.items]      # ['/login']

    Requests that no rule matches share one ``default`` counter per client, whatever
    their path: counting per path would let a client escape by varying it.
    *exempt_when* is asked first, for every request: ``True`` means no plan.
    *global_limits* apply to every request that is not exempt, beside its rule's limits
    (or alone, where no rule or default limits it), each counted across all routes.
    """

    __slots__ = ("_default", "_entries", "_exempt_when", "_globals", "_key", "_messages",
                 "_plans", "_shadow", "_specs", "table")

    def __init__(
        self,
        *,
        default_limits: LimitsSpec | LimitsFunc | None = None,
        key: KeyFunc | Sequence[KeyFunc] | None = None,
        rules: Iterable[Rule] = (),
        shadow: bool = False,
        exempt_when: ExemptFunc | None = None,
        global_limits: LimitsSpec | None = None,
    ) -> None:
        if not isinstance(shadow, bool):
            raise ConfigurationError(f"shadow={shadow!r}: must be True or False")
        self._exempt_when = exempt_predicate(exempt_when)
        if isinstance(rules, Rule):
            rules = [rules]
        self.table = RuleTable(rules)
        # A function is kept to be asked per request; anything else is parsed now.
        function = limits_function(default_limits)
        default = () if function is not None else parse_layers(
            default_limits, "default_limits")  # type: ignore[arg-type]
        if limits_function(global_limits) is not None:
            raise ConfigurationError("global_limits: give Limits or rates such as "
                                     "'1000/hour'; choose limits per request in a rule")
        # Checked as Rule checks its key=, so key=5 gets a message naming the option.
        base_keys = key_functions(key, "key")
        # Every chain ends with the socket peer, so a request always has an identity.
        self._key = (*base_keys, client_ip())
        self._globals = _layers(_GLOBAL_OWNER, _GLOBAL_NAME,
                                parse_layers(global_limits, "global_limits"), self._key,
                                self._key)
        self._entries: dict[int, _Entry] = {}
        self._shadow = shadow
        self._messages = False
        for compiled in self.table.rules:
            if compiled.exempt:
                continue
            # A rule that limits only websocket messages or only requests in flight
            # leaves the rest to the global limits: default_limits would be a rate
            # nobody wrote on the route.
            own = bool(compiled.layers or compiled.limits_function)
            alone = not own and bool(compiled.messages or compiled.concurrency)
            self._messages = self._messages or bool(compiled.messages)
            layers = () if alone else compiled.layers or default
            if not (layers or compiled.limits_function or function or alone):
                raise ConfigurationError(
                    f"Rule({compiled.template!r}) has no limits and there are no "
                    "default_limits; give the rule limits or set default_limits"
                )
            self._entries[id(compiled)] = self._entry(
                compiled, compiled.name, layers,
                None if alone else
                compiled.limits_function or (function if not compiled.layers else None),
                (*compiled.keys, *self._key), shadow)
        self._default = self._entry(None, _DEFAULT_NAME, default, function, self._key,
                                    shadow) if (default or function or self._globals) else None
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self._specs: dict[tuple[int, Any], tuple[_Layer, ...]] = {}

    def _entry(self, rule: CompiledRule | None, name: str, limits: tuple[Limit, ...],
               function: LimitsFunc | None, keys: tuple[KeyFunc, ...],
               shadow: bool) -> _Entry:
        if rule is not None and rule.shadow is not None:
            shadow = rule.shadow  # the rule's own setting wins over the global one
        settle = None if rule is None else rule.settle
        penalty = 0 if rule is None else rule.penalty
        lease = rule is not None and rule.concurrency is not None
        if function is not None:
            return _Entry(rule, settle, penalty, (), function, keys, name, shadow, lease)
        return _Entry(rule, settle, penalty,
                      _layers(name, name, limits, keys, self._key, self._globals, rule),
                      None, keys, name, shadow, lease)

    def plan(self, request: RequestInfo) -> Plan | None:
        """The limits *request* is subject to, or ``None`` when it is exempt or unlimited."""
        if self._exempt_when is not None and self._exempt_when(request):
            return None
        rule = self.table.match(request)
        if rule is None:
            entry = self._default
            if entry is None:
                return None
        elif rule.may_exempt and (rule.exempt_when is None or rule.exempt_when(request)):
            return None
        else:
            entry = self._entries[id(rule)]
        cost = 1
        if entry.rule is not None:
            cost_spec = entry.rule.cost
            if callable(cost_spec):
                cost = _checked_cost(cost_spec(request), entry.name)
            else:
                cost = cost_spec
        spec_key: Any = None
        layers = entry.layers
        if entry.function is not None:
            spec = entry.function(request)
            # None: the rule does not limit this request (the global limits still do).
            spec_key = None if spec is None else _spec_key(spec, entry.name)
            layers = self._parsed(entry, spec_key)
            if not layers:
                return None
        if len(layers) == 1:
            layer = layers[0]
            identity = None
            for function in layer.keys:  # _identity(), inline: the common path
                identity = function(request)
                if identity is not None:
                    break
            assert identity is not None  # client_ip() always answers
            # Plans are immutable and the same client asks again and again: reuse them.
            # The cache is bounded (cleared when full), so a flood of identities only
            # costs the building we would have done anyway. Keyed by the entry itself:
            # two rules sharing a name share a prefix, not limits.
            cache_key: tuple[Any, ...] = (id(entry), identity, cost, spec_key)
            plan = self._plans.get(cache_key)
            if plan is None:
                items = _items(layer, identity, cost)
                plan = self._cache(cache_key, Plan(
                    entry.name, identity, items, entry.shadow, entry.settle,
                    self._penalty(entry, identity, len(items)), entry.lease))
            return plan
        return self._layered(request, entry, layers, cost, spec_key)

    def messages(self, request: RequestInfo) -> tuple[RateLimitItem, ...]:
        """The ``messages=`` rates of the rule *request* (a websocket handshake) matches.

        Empty when no rule limits messages there, or when the request is exempt
        (``exempt_when``) or its rule in shadow mode: those refuse nothing.

        >>> policy = Policy(rules=[Rule("/ws", messages="5/second")])
        >>> policy.messages(RequestInfo("GET", "/ws"))
        (5 per 1 second,)
        """
        if not self._messages:
            return ()
        if self._exempt_when is not None and self._exempt_when(request):
            return ()
        rule = self.table.match(request)
        if rule is None or not rule.messages or (
                rule.exempt_when is not None and rule.exempt_when(request)):
            return ()
        if rule.shadow if rule.shadow is not None else self._shadow:
            return ()
        return rule.messages

    def _layered(self, request: RequestInfo, entry: _Entry, layers: tuple[_Layer, ...],
                 cost: int, spec_key: Any) -> Plan | None:
        """The plan of a request whose limits count several identities (``None`` for a
        rule that limits only websocket messages, where no global limits apply)."""
        if not layers:
            return None
        identities: list[str] = []
        last_keys: tuple[KeyFunc, ...] = ()
        identity = ""
        for layer in layers:
            if layer.keys is not last_keys:  # layers of one identity ask their keys once
                last_keys = layer.keys
                identity = _identity(layer.keys, request)
            identities.append(identity)
        cache_key = (id(entry), tuple(identities), cost, spec_key)
        plan = self._plans.get(cache_key)
        if plan is None:
            items = tuple(item for layer, identity in zip(layers, identities, strict=True)
                          for item in _items(layer, identity, cost))
            plan = self._cache(cache_key, Plan(
                entry.name, identities[0], items, entry.shadow, entry.settle,
                self._penalty(entry, identities[0], len(items)), entry.lease))
        return plan

    def _penalty(self, entry: _Entry, identity: str, count: int) -> Penalty | None:
        """*entry*'s penalty for *identity*: triggered by its own limits, not the global
        ones (which come last in a plan)."""
        if not entry.penalty:
            return None
        shared = sum(len(layer.limits) for layer in self._globals)  # every plan ends so
        return Penalty(entry.penalty, penalty_key(entry.name, identity), count - shared)

    def _cache(self, key: tuple[Any, ...], plan: Plan) -> Plan:
        if len(self._plans) >= _PLAN_CACHE:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def _parsed(self, entry: _Entry, spec: Any) -> tuple[_Layer, ...]:
        """The layers for what a limits function returned, built once per distinct spec.

        A function that returns the same spec again costs one dict lookup. A spec that is
        not a limit is the function's bug: a `ConfigurationError` naming the rule.
        """
        found = self._specs.get((id(entry), spec))
        if found is None:
            limits = () if spec is None else parse_layers(
                spec, f"limits function of {entry.name!r}")
            if spec is not None and not limits:
                raise ConfigurationError(f"limits function of {entry.name!r}: returned "
                                         f"{spec!r}; return None to leave a request unlimited")
            if len(self._specs) >= _SPEC_CACHE:
                self._specs.clear()
            found = self._specs[(id(entry), spec)] = _layers(
                entry.name, entry.name, limits, entry.keys, self._key, self._globals,
                entry.rule)
        return found
