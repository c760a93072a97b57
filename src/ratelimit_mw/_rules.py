"""Per-route rules and the table that finds the one that applies to a request. No I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from limits import RateLimitItem, RateLimitItemPerSecond, parse_many

from ._request import RequestInfo, normalize_path
from ._response import CountFunc, ResponseCostFunc, Settle
from .errors import ConfigurationError
from .keys import KeyFunc

if TYPE_CHECKING:
    from ._strategies import StrategySpec

__all__ = ["CompiledRule", "ExemptFunc", "Limit", "LimitsFunc", "LimitsSpec", "PathMatcher",
           "Rule", "RuleTable", "limits_function", "parse_layers", "parse_limits"]

#: Rates: ``"10/minute"``, ``"10/second;1000/hour"``, a ``limits`` item, or a list of them.
RateSpec: TypeAlias = "str | RateLimitItem | Sequence[str | RateLimitItem]"
#: What ``limits=`` takes: rates, a `Limit`, or a list mixing rates and `Limit`s.
LimitsSpec: TypeAlias = "str | RateLimitItem | Limit | Sequence[str | RateLimitItem | Limit]"
#: Limits decided per request (a plan from an API-key lookup, a gateway header): a spec,
#: or ``None`` for "this rule does not limit the request".
LimitsFunc: TypeAlias = Callable[[RequestInfo], "LimitsSpec | None"]
CostFunc: TypeAlias = Callable[[RequestInfo], int]
#: ``exempt_when=``: ``True`` lets the request through unlimited and uncounted.
ExemptFunc: TypeAlias = Callable[[RequestInfo], bool]


class PathMatcher(Protocol):
    """What matches a rule's dynamic paths: a compiled template, or a router's own
    pattern (rules found from an app's routes, ``_routes.py``)."""

    def fullmatch(self, string: str, /) -> object: ...


#: The namespace of every limit item this package creates; the first part of its keys.
NAMESPACE = "rl"

_PARAM = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CONVERTERS = {"str": r"[^/]+", "path": r".+", "int": r"[0-9]+"}
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}
)


def parse_limits(spec: RateSpec | None, where: str) -> tuple[RateLimitItem, ...]:
    """Parse ``"10/second;1000/hour"``, an item or a list of either; errors name *where*."""
    if spec is None:
        return ()
    if isinstance(spec, str | RateLimitItem):
        parts: list[object] = [spec]
    elif isinstance(spec, Iterable):
        parts = list(spec)
    else:
        # Checked before list(), so that a non-iterable such as 5 gets a
        # ConfigurationError that names *where*.
        raise ConfigurationError(f"{where}: limits must be a string like '10/minute' or a "
                                 f"list of them, got {spec!r}")
    items: list[RateLimitItem] = []
    for part in parts:
        if isinstance(part, RateLimitItem):
            items.append(part)
            continue
        if isinstance(part, Limit):
            raise ConfigurationError(f"{where}: a Limit's rates are strings like "
                                     "'10/minute'; list Limits side by side instead")
        if not isinstance(part, str):
            raise ConfigurationError(f"{where}: limits must be strings like '10/minute', "
                                     f"got {part!r}")
        try:
            items.extend(parse_many(part))
        except ValueError:
            raise ConfigurationError(
                f"{where}: {part!r} is not a rate limit; write e.g. '5/minute', "
                "'10 per second' or '10/second;1000/hour'"
            ) from None
    for item in items:
        if item.amount < 1:
            raise ConfigurationError(f"{where}: {item!r} allows nothing; use exempt or a "
                                     "positive amount")
    # Re-home every item in our namespace: limits puts the namespace first in the key.
    return tuple(type(i)(i.amount, i.multiples, namespace=NAMESPACE) for i in items)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|sec|seconds?|m|min|"
                       r"minutes?|h|hours?|d|days?)\s*\Z", re.IGNORECASE)
_UNIT_MS = {"ms": 1, "millisecond": 1, "milliseconds": 1, "s": 1000, "sec": 1000,
            "second": 1000, "seconds": 1000, "m": 60_000, "min": 60_000,
            "minute": 60_000, "minutes": 60_000, "h": 3_600_000, "hour": 3_600_000,
            "hours": 3_600_000, "d": 86_400_000, "day": 86_400_000, "days": 86_400_000}


def parse_duration(value: object, where: str) -> int:
    """``"15 minutes"``, ``"30s"``, seconds as a number, or a ``timedelta``: whole ms >= 1."""
    if isinstance(value, timedelta):
        ms = value.total_seconds() * 1000
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ms = value * 1000
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        ms = float(match.group(1)) * _UNIT_MS[match.group(2).lower()]
    else:
        raise ConfigurationError(f"{where}={value!r}: write a duration such as "
                                 "'15 minutes', '30s' or a number of seconds")
    if not ms >= 1:  # also refuses NaN
        raise ConfigurationError(f"{where}={value!r}: must be at least 1 ms")
    return int(ms)


def limits_function(spec: object) -> LimitsFunc | None:
    """*spec* when it is a function choosing the limits per request, else ``None``."""
    if callable(spec) and not isinstance(spec, str | RateLimitItem | Limit):
        return spec
    return None


def key_functions(key: KeyFunc | Sequence[KeyFunc] | None, where: str) -> tuple[KeyFunc, ...]:
    """Check a ``key=`` option: ``None``, a key function or a sequence of them."""
    # A string is iterable but is no key function: it is refused whole, not read letter
    # by letter. A non-iterable such as key=5 is refused before tuple(). Either way the
    # ConfigurationError names *where*.
    if key is None:
        return ()
    if callable(key):
        return (key,)
    if isinstance(key, str | bytes) or not isinstance(key, Iterable):
        raise ConfigurationError(f"{where}: key {key!r} is not callable; use "
                                 "ratelimit_mw.keys or (RequestInfo) -> str | None")
    functions = tuple(key)
    for function in functions:
        if not callable(function):
            raise ConfigurationError(f"{where}: key {function!r} is not callable; use "
                                     "ratelimit_mw.keys or (RequestInfo) -> str | None")
    return functions


def exempt_predicate(value: ExemptFunc | None, where: str = "") -> ExemptFunc | None:
    """Check an ``exempt_when=`` option: ``None`` or a callable; errors name *where*."""
    if value is not None and not callable(value):
        prefix = f"{where}: " if where else ""
        raise ConfigurationError(f"{prefix}exempt_when={value!r} is not callable; use "
                                 "(RequestInfo) -> bool, e.g. keys.client_in([...])")
    return value


@dataclass(frozen=True, slots=True)
class Limit:
    """Rates counted for an identity of their own: one layer of a request's limits.

    *key* says whom the rates count (a key function or a chain of them; ``None``: the
    rule's key); when it answers ``None`` the request counts as the middleware's key
    would count it, so a missing header never escapes a limit. *name* names the layer in
    the ``RateLimit`` headers and the problem body, and gives it a counter of its own.

    Example::

        Rule("/search", [Limit("10/second"),
                         Limit("1000/hour", key=keys.header("X-Tenant"), name="tenant")])
        RateLimitMiddleware(app, default_limits="100/minute",
                            global_limits=[Limit("5000/minute", key=keys.shared(),
                                                 name="global")])

    Every limit of a request, across its identities, is decided at once: a request that
    the tenant's limit refuses consumes nothing of the user's. Limits that share a name
    (unnamed ones included) must count the same identity: they are one layer.
    """

    spec: RateSpec = field(compare=False)
    key: KeyFunc | Sequence[KeyFunc] | None = field(default=None, compare=False)
    name: str | None = None
    #: The parsed rates and key functions: what two equal Limits have in common.
    items: tuple[RateLimitItem, ...] = field(init=False, repr=False)
    keys: tuple[KeyFunc, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        where = f"Limit({self.spec!r})"
        items = parse_limits(self.spec, where)
        if not items:
            raise ConfigurationError(f"{where}: give rates, e.g. Limit('10/minute')")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ConfigurationError(f"{where}: name must be a non-empty string")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "keys", key_functions(self.key, where))


def parse_layers(spec: LimitsSpec | None, where: str) -> tuple[Limit, ...]:
    """*spec* as layers: rates without a `Limit` form one unnamed layer counted for the
    rule's key; `Limit`s with the same name and key merge into one layer."""
    if spec is None:
        return ()
    if isinstance(spec, Limit):
        return (spec,)
    if isinstance(spec, str | RateLimitItem) or not isinstance(spec, Iterable):
        return (Limit(parse_limits(spec, where)),)
    layers: dict[str | None, Limit] = {}
    for given in spec:
        part = given if isinstance(given, Limit) else Limit(parse_limits(given, where))
        found = layers.get(part.name)
        if found is None:
            layers[part.name] = part
        elif found.keys != part.keys:
            label = "unnamed" if part.name is None else f"named {part.name!r}"
            raise ConfigurationError(
                f"{where}: two Limits {label} count different identities; give each a "
                "name=, e.g. Limit('1000/hour', key=keys.header('X-Tenant'), "
                "name='tenant')")
        else:
            layers[part.name] = Limit((*found.items, *part.items), key=found.key,
                                      name=found.name)
    return tuple(layers.values())


def compile_template(template: str) -> tuple[str, re.Pattern[str] | None]:
    """Normalise a path template; return it with a regex, or ``None`` for a static path."""
    if not isinstance(template, str) or not template.startswith("/"):
        raise ConfigurationError(f"Rule({template!r}): a path template must start with '/'")
    outside = _PARAM.sub("", template)
    if "{" in outside or "}" in outside:
        raise ConfigurationError(f"Rule({template!r}): unbalanced '{{' or '}}' in the path")
    # The static text around parameters is normalised the way request paths are.
    template = _renormalize(template)
    pattern: list[str] = []
    names: set[str] = set()
    pos = 0
    for match in _PARAM.finditer(template):
        name, _, converter = match.group(1).partition(":")
        converter = converter or "str"
        if not _NAME.match(name):
            raise ConfigurationError(
                f"Rule({template!r}): {{{match.group(1)}}} needs a name like {{item_id}}"
            )
        if name in names:
            raise ConfigurationError(f"Rule({template!r}): parameter {name!r} appears twice")
        if converter not in _CONVERTERS:
            raise ConfigurationError(
                f"Rule({template!r}): unknown converter {converter!r} in {{{match.group(1)}}};"
                " use str, int or path"
            )
        if converter == "path" and match.end() != len(template):
            raise ConfigurationError(
                f"Rule({template!r}): {{{match.group(1)}}} takes the rest of the path, "
                "so it must come last"
            )
        names.add(name)
        pattern.append(re.escape(template[pos:match.start()]))
        pattern.append(f"(?P<{name}>{_CONVERTERS[converter]})")
        pos = match.end()
    if not names:
        return template, None
    pattern.append(re.escape(template[pos:]))
    return template, re.compile("".join(pattern))


def _renormalize(template: str) -> str:
    # Protect the parameters from normalisation (a '{x:path}' has no '/' to lose, but
    # '%' escapes and '//' around it must be treated like a request's).
    params: list[str] = []

    def stash(match: re.Match[str]) -> str:
        params.append(match.group(0))
        return f"\0{len(params) - 1}\0"

    text = normalize_path(_PARAM.sub(stash, template))
    return re.sub(r"\0(\d+)\0", lambda m: params[int(m.group(1))], text)


@dataclass(frozen=True, slots=True)
class Rule:
    """Limits for the requests whose path matches *path* (and *methods*, if given).

    ``{name}`` matches one path segment, ``{name:int}`` digits, ``{name:path}`` the rest
    of the path. Rules are tried in order and the first match wins; a request no rule
    matches gets the middleware's ``default_limits``. Each rule counts in its own
    namespace — its *name*, else its template — so ``/items/1`` and ``/items/2`` share
    the counter of ``/items/{id}``, and rules with the same *name* share one counter.

    Example::

        Rule("/login", "5/minute", methods=["POST"])
        Rule("/api/{version}/search", "10/second;1000/hour", key=keys.api_key("X-API-Key"))
        Rule("/reports/{id}", "100/hour", cost=10, name="reports")
        Rule("/health", exempt=True)
        Rule("/search", "10/second", exempt_when=keys.client_in(["10.0.0.0/8"]))
        Rule("/search", [Limit("10/second"),
                         Limit("1000/hour", key=keys.header("X-Tenant"), name="tenant")])

    *exempt_when* is ``(RequestInfo) -> bool``, asked for each request the rule matches:
    ``True`` lets that request through uncounted, without quota headers or a decision;
    ``False`` applies the rule's limits as usual.

    *messages* limits what a client sends over each websocket connection the rule
    matches (``"20/second"``, several rates allowed), counted in process per connection;
    over it the connection is closed with code 1008. A rule with *messages* and no
    *limits* does not limit the handshake itself (nor take ``default_limits``)::

        Rule("/ws/chat", messages="5/second;100/minute")

    ``methods=["GET"]`` covers ``HEAD`` too, as frameworks route HEAD to the GET
    handler. *limits* ``None`` means the middleware's ``default_limits`` counted in this
    rule's own namespace; a list may hold `Limit`s, layers counted for identities of
    their own and decided with the rest at once; a function ``(RequestInfo) -> spec |
    None`` chooses them per request (``None``: the rule does not limit it). *cost* is a
    whole number or ``(RequestInfo) -> int``, consumed from every limit of the request.

    *strategy* counts this rule's rates with a strategy of its own (``"gcra"``,
    ``"moving-window"``, ...; ``None``: the middleware's); *burst* is GCRA's bucket size
    (``"10/second"`` admits a burst of 10 unless ``burst=`` says otherwise; giving it
    implies ``strategy="gcra"``). ``align="calendar"`` makes the rule's windows calendar
    ones: ``"1000/day"`` resets at midnight UTC (or in *tz*, e.g. ``"Europe/Paris"``),
    ``"100000/month"`` on the 1st::

        Rule("/search", "10/second", strategy="gcra", burst=20)
        Rule("/api/{path:path}", "1000/day", align="calendar", tz="America/New_York")

    *concurrency* caps the requests of one identity in flight at once, alone or beside
    rates: a slot is taken with the rates' check and given back when the response ends
    (its last body chunk, an error, the client leaving); a worker that dies holds its
    slot no longer than *concurrency_timeout* (default 60 s). A refusal is a 429 with
    ``Retry-After: 1``::

        Rule("/export/{id}", concurrency=2, key=keys.header("X-API-Key"))

    Security: paths are normalised before matching (``/login/``, ``//login``,
    ``/./login`` and ``/log%69n`` all match ``/login``), so no variant escapes a rule.
    """

    path: str
    limits: LimitsSpec | LimitsFunc | None = None
    methods: Iterable[str] | None = None
    key: KeyFunc | Sequence[KeyFunc] | None = None
    cost: int | CostFunc = 1
    exempt: bool = False
    name: str | None = None
    shadow: bool | None = None
    exempt_when: ExemptFunc | None = None
    count_when: CountFunc | None = None
    response_cost: ResponseCostFunc | None = None
    penalty: str | float | timedelta | None = None
    messages: RateSpec | None = None
    strategy: str | None = None
    burst: int | None = None
    concurrency: int | None = None
    concurrency_timeout: str | float | timedelta = 60
    align: str | None = None
    tz: str | tzinfo | None = None
    _compiled: CompiledRule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", CompiledRule.build(self))

    @property
    def compiled(self) -> CompiledRule:
        """This rule checked and prepared for matching (built once, at construction)."""
        return self._compiled


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A `Rule` checked and prepared for matching."""

    template: str
    regex: PathMatcher | None
    methods: frozenset[str] | None
    #: The rule's limits as layers (`parse_layers`); empty when chosen per request.
    layers: tuple[Limit, ...]
    #: Limits chosen per request (``limits=`` a callable); ``layers`` is then empty.
    limits_function: LimitsFunc | None
    keys: tuple[KeyFunc, ...]
    cost: int | CostFunc
    exempt: bool
    name: str
    shadow: bool | None
    exempt_when: ExemptFunc | None
    #: ``exempt`` or ``exempt_when``: the one flag `Policy.plan` reads, so that rules
    #: without a predicate cost no more than before predicates existed.
    may_exempt: bool
    #: ``count_when`` / ``response_cost``, or ``None`` when the check is the count.
    settle: Settle | None
    #: ``penalty`` in ms; 0 for none.
    penalty: int
    #: ``messages``: the rates of what a client sends per websocket connection.
    messages: tuple[RateLimitItem, ...] = ()
    #: The strategy of the rule's rates (``None``: the limiter's) and what it needs
    #: besides them (`PlanItem.option`: GCRA's burst, a calendar's time zone).
    strategy: StrategySpec | None = None
    option: Any = 0
    #: ``concurrency``: N in flight per identity, as a limit item, and the lease timeout.
    concurrency: RateLimitItem | None = None
    concurrency_ms: int = 0

    @classmethod
    def build(cls, rule: Rule) -> CompiledRule:
        where = f"Rule({rule.path!r})"
        template, regex = compile_template(rule.path)
        methods: frozenset[str] | None = None
        if rule.methods is not None:
            if isinstance(rule.methods, str):
                raise ConfigurationError(f"{where}: methods must be a list, e.g. "
                                         f"[{rule.methods!r}]")
            # Checked before .upper(), so that methods=5 or methods=[1] gets a
            # ConfigurationError that names the rule. Listed once, so a generator is
            # read once.
            if not isinstance(rule.methods, Iterable):
                raise ConfigurationError(f"{where}: methods must be a list, e.g. ['GET']")
            given = list(rule.methods)
            for method in given:
                if not isinstance(method, str):
                    raise ConfigurationError(f"{where}: methods must be strings such as "
                                             f"'GET', got {method!r}")
            methods = frozenset(m.upper() for m in given)
            unknown = methods - _METHODS
            if unknown:
                raise ConfigurationError(f"{where}: unknown HTTP method(s) {sorted(unknown)}")
            if not methods:
                raise ConfigurationError(f"{where}: methods=[] matches nothing; use None "
                                         "for every method")
            if "GET" in methods:
                methods |= {"HEAD"}
        function = limits_function(rule.limits)
        layers = () if function is not None else parse_layers(
            rule.limits, where)  # type: ignore[arg-type]
        if not isinstance(rule.exempt, bool):
            raise ConfigurationError(f"{where}: exempt must be True or False, "
                                     f"got {rule.exempt!r}")
        if rule.exempt and (layers or function is not None):
            raise ConfigurationError(f"{where}: an exempt rule takes no limits")
        exempt_when = exempt_predicate(rule.exempt_when, where)
        if rule.exempt and exempt_when is not None:
            raise ConfigurationError(f"{where}: exempt=True already exempts every request; "
                                     "give exempt_when= alone to exempt some")
        keys = key_functions(rule.key, where)
        cost = rule.cost
        if not callable(cost) and (
            isinstance(cost, bool) or not isinstance(cost, int) or cost < 1
        ):
            raise ConfigurationError(f"{where}: cost must be a whole number >= 1 or a "
                                     f"callable, got {cost!r}")
        if rule.name is not None and (not isinstance(rule.name, str) or not rule.name):
            raise ConfigurationError(f"{where}: name must be a non-empty string")
        if rule.shadow is not None and not isinstance(rule.shadow, bool):
            raise ConfigurationError(f"{where}: shadow must be True, False or None")
        # Not `option`, the name of the strategy's option below: mypyc gives a variable
        # one type, and checks it on assignment.
        for hook in ("count_when", "response_cost"):
            value = getattr(rule, hook)
            if value is not None and not callable(value):
                raise ConfigurationError(f"{where}: {hook}={value!r} is not callable; use "
                                         "(ResponseInfo) -> " + (
                                             "bool" if hook == "count_when" else "int"))
            if value is not None and rule.exempt:
                raise ConfigurationError(f"{where}: an exempt rule counts nothing; drop "
                                         f"{hook}=")
        settle = None if rule.count_when is None and rule.response_cost is None else Settle(
            rule.count_when, rule.response_cost)
        penalty = 0 if rule.penalty is None else parse_duration(rule.penalty,
                                                               f"{where}: penalty")
        if penalty and rule.exempt:
            raise ConfigurationError(f"{where}: an exempt rule refuses nothing; drop penalty=")
        messages = parse_limits(rule.messages, f"{where}: messages")
        if rule.messages is not None and not messages:
            raise ConfigurationError(f"{where}: messages={rule.messages!r} gives no rate; "
                                     "write e.g. messages='20/second', or drop it")
        if messages and rule.exempt:
            raise ConfigurationError(f"{where}: an exempt rule limits nothing; drop "
                                     "messages=")
        strategy, option = _rule_strategy(rule, layers, where)
        concurrency, concurrency_ms = _concurrency(rule, where)
        return cls(template, regex, methods, layers, function, keys, cost, rule.exempt,
                   rule.name or template, rule.shadow, exempt_when,
                   rule.exempt or exempt_when is not None, settle, penalty, messages,
                   strategy, option, concurrency, concurrency_ms)

    @property
    def limits(self) -> tuple[RateLimitItem, ...]:
        """Every rate of the rule's layers, in order."""
        return tuple(item for layer in self.layers for item in layer.items)

    def matches(self, path: str, method: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.regex is None:
            return path == self.template
        return self.regex.fullmatch(path) is not None


def _rule_strategy(rule: Rule, layers: tuple[Limit, ...],
                   where: str) -> tuple[StrategySpec | None, Any]:
    """The strategy *rule* counts its rates with and its option (`PlanItem.option`)."""
    if rule.exempt and (rule.strategy is not None or rule.burst is not None
                        or rule.align is not None):
        raise ConfigurationError(f"{where}: an exempt rule counts nothing; drop strategy=, "
                                 "burst= and align=")
    return counting(rule.strategy, rule.burst, rule.align, rule.tz,
                    [item for layer in layers for item in layer.items], where)


def counting(strategy: str | None, burst: int | None, align: str | None, tz: object,
             items: Sequence[RateLimitItem], where: str) -> tuple[StrategySpec | None, Any]:
    """The strategy rates are counted with (``None``: the limiter's) and its option
    (`PlanItem.option`), from the options ``Rule`` and the limiters' ``hit`` share."""
    from ._strategies import CALENDAR, strategy_named

    spec = None if strategy is None else strategy_named(strategy, f"{where}: strategy")
    if burst is not None:
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigurationError(f"{where}: burst={burst!r}: must be a whole number >= 1")
        if spec is None:
            spec = strategy_named("gcra")
        elif spec.name != "gcra":
            raise ConfigurationError(f"{where}: burst= is GCRA's bucket size; use "
                                     f"strategy='gcra' (not {spec.name!r}) or drop burst=")
        return spec, burst
    if tz is not None and align is None:
        raise ConfigurationError(f"{where}: tz= says where calendar windows turn; add "
                                 "align='calendar' or drop tz=")
    if align is None:
        return spec, 0
    if align != "calendar":
        raise ConfigurationError(f"{where}: align={align!r}: the one alignment is "
                                 "'calendar'")
    if spec is not None and spec.name != "fixed-window":
        raise ConfigurationError(f"{where}: align='calendar' counts fixed calendar windows; "
                                 f"drop strategy={spec.name!r}")
    from ._strategies.calendar import ALIGNED_UNITS

    for item in items:
        if item.multiples != 1 or item.GRANULARITY.name not in ALIGNED_UNITS:
            raise ConfigurationError(
                f"{where}: align='calendar' needs windows of one unit ('1000/day', "
                f"'100000/month', '100/hour'); {item!r} is not one")
    return CALENDAR, _zone(tz, where)


def _zone(tz: object, where: str) -> tzinfo | None:
    """*tz* (``None``, a tzinfo or an IANA name) as a tzinfo; ``None`` for UTC."""
    if tz is None or isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise ConfigurationError(f"{where}: tz={tz!r}: give an IANA zone name such as "
                                 "'Europe/Paris'")
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"{where}: tz={tz!r} is not a time zone this machine "
                                 "knows; use an IANA name such as 'Europe/Paris' (pip "
                                 "install tzdata where the system has none)") from None


def _concurrency(rule: Rule, where: str) -> tuple[RateLimitItem | None, int]:
    """*rule*'s ``concurrency``: a limit item of N per timeout, and the timeout in ms."""
    if rule.concurrency is None:
        return None, 0
    count = rule.concurrency
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigurationError(f"{where}: concurrency={count!r}: must be a whole number "
                                 ">= 1 (requests in flight at once)")
    if rule.exempt:
        raise ConfigurationError(f"{where}: an exempt rule limits nothing; drop "
                                 "concurrency=")
    ms = parse_duration(rule.concurrency_timeout, f"{where}: concurrency_timeout")
    return RateLimitItemPerSecond(count, -(-ms // 1000), namespace=NAMESPACE), ms


class RuleTable:
    """Finds the first rule that matches a request.

    Example::

        table = RuleTable([Rule("/login", "5/minute")])
        table.match(RequestInfo("POST", "/login/"))   # the /login rule

    Static templates are looked up in a dict when no earlier dynamic rule could shadow
    them, so the common case costs one dict lookup and no regex.
    """

    __slots__ = ("_dynamic", "_rules", "_static")

    def __init__(self, rules: Iterable[Rule]) -> None:
        compiled: list[CompiledRule] = []
        for rule in rules:
            if not isinstance(rule, Rule):
                raise ConfigurationError(f"rules: {rule!r} is not a Rule")
            compiled.append(rule._compiled)
        self._rules = tuple(compiled)
        # Index static rules by path; each entry keeps its position so a dynamic rule
        # listed earlier still wins.
        self._static: dict[str, list[tuple[int, CompiledRule]]] = {}
        self._dynamic: list[tuple[int, CompiledRule]] = []
        for index, entry in enumerate(self._rules):
            if entry.regex is None:
                self._static.setdefault(entry.template, []).append((index, entry))
            else:
                self._dynamic.append((index, entry))

    @property
    def rules(self) -> tuple[CompiledRule, ...]:
        return self._rules

    def match(self, request: RequestInfo) -> CompiledRule | None:
        """The first rule for *request*'s normalised path and method, or ``None``.

        Where a second layer of percent-escapes changes the path (`request_paths`), the
        path the router sees is tried first: the rule of the route that serves the
        request wins. The decoded path is tried next, but cannot exempt a request.
        """
        routed = request.routed_path
        if routed is None:
            return self._match(request.path, request.method)
        found = self._match(routed, request.method)
        if found is not None:
            return found
        found = self._match(request.path, request.method)
        return None if found is not None and found.exempt else found

    def _match(self, path: str, method: str) -> CompiledRule | None:
        best: CompiledRule | None = None
        best_index = len(self._rules)
        for index, rule in self._static.get(path, ()):
            if rule.methods is None or method in rule.methods:
                best, best_index = rule, index
                break
        for index, rule in self._dynamic:
            if index >= best_index:
                break
            if rule.matches(path, method):
                return rule
        return best
