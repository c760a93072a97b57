"""Limits declared on endpoints: ``@limit``, ``@exempt``, and the rules found from an
app's router (the adapters are in ``_routers.py``); the drift check of explicit rules.

No framework is imported here. The middlewares call `RouteLoader.load` once, at lifespan
startup or at the first request, and swap in the `Policy` it returns.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ._regex_example import example_of
from ._request import normalize_path
from ._rules import LimitsFunc, LimitsSpec, Rule, compile_template
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._core import Policy
    from ._options import MiddlewareOptions

__all__ = ["Part", "Route", "RouteLoader", "Routes", "exempt", "limit", "marks_of",
           "route_example", "route_rules", "unmatched_rules"]

logger = logging.getLogger("ratelimit_mw")

F = TypeVar("F")

#: The attribute `limit` and `exempt` leave on an endpoint: a tuple of `Rule`s whose
#: path is a placeholder, replaced by the route's when the router is read.
MARK = "__ratelimit_mw__"
_PLACEHOLDER = "/"

#: Whether any endpoint of this process was marked: when the router of an app cannot be
#: read, that turns a note into a warning (those limits are then not applied).
_marked: weakref.WeakSet[Any] = weakref.WeakSet()
_marked_unweakable = False


def _mark(target: Any, rule: Rule) -> None:
    global _marked_unweakable
    # Decorators run bottom-up: the rule of the decorator written first goes first, so
    # the order on the page is the order rules are tried (first match wins).
    try:
        setattr(target, MARK, (rule, *getattr(target, MARK, ())))
    except (AttributeError, TypeError):
        raise ConfigurationError(
            f"@limit/@exempt cannot mark {target!r} (it takes no attributes); decorate "
            "the function or class the router calls") from None
    try:
        _marked.add(target)
    except TypeError:
        _marked_unweakable = True


def limit(spec: LimitsSpec | LimitsFunc, **rule_options: Any) -> Callable[[F], F]:
    """Limit the endpoint it decorates: the middleware finds it from the app's router.

    *spec* and *rule_options* are `Rule`'s (``methods``, ``key``, ``cost``, ``name``,
    ``exempt_when``, ``shadow``, ``messages`` on a websocket route): the route's own path
    template becomes the rule's path.

    Example::

        @app.post("/login")
        @limit("5/minute", key=keys.client_ip())
        async def login(request): ...

    Decorators stack: the first written is tried first, and the first that matches a
    request decides it (give each ``methods=`` to limit methods differently). Rules given
    in ``rules=`` are tried before decorated routes. Flask blueprints and Starlette or
    Litestar handler classes may be decorated too (every route under them).
    """
    if "path" in rule_options:
        raise ConfigurationError("limit(): the path comes from the route; use "
                                 "Rule(path, ...) in rules= to name paths yourself")
    if spec is None:
        raise ConfigurationError("limit(): give rates, e.g. limit('5/minute'); use "
                                 "@exempt for no limit")
    try:
        rule = Rule(_PLACEHOLDER, spec, **rule_options)
    except ConfigurationError as error:
        raise ConfigurationError(str(error).replace(
            f"Rule({_PLACEHOLDER!r})", f"limit({spec!r})", 1)) from None
    except TypeError as error:  # an option Rule does not have
        raise ConfigurationError(f"limit({spec!r}): {error}; the options are Rule's "
                                 "(methods, key, cost, name, exempt_when, shadow)") from None

    def decorate(endpoint: F) -> F:
        _mark(endpoint, rule)
        return endpoint

    return decorate


def exempt(endpoint: F) -> F:
    """Exempt the endpoint it decorates: no limit, no counter, no quota headers.

    Example::

        @app.get("/health")
        @exempt
        async def health(request): ...
    """
    _mark(endpoint, Rule(_PLACEHOLDER, exempt=True))
    return endpoint


def marks_of(candidates: Iterable[object]) -> tuple[Rule, ...]:
    """The rules marked on the first of *candidates* that has any (the view before its
    class, its blueprint, ...)."""
    for candidate in candidates:
        found = getattr(candidate, MARK, None)
        if isinstance(found, tuple) and found:
            return found
    return ()


# --- routes, as the adapters describe them -------------------------------------------------


class Part(NamedTuple):
    """A piece of a route's path: literal *text*, or a parameter (*regex* not ``None``)
    matching what the router's converter matches."""

    text: str
    regex: str | None = None


class Route(NamedTuple):
    """One route of an app, translated: what a rule needs and what a person reads."""

    #: The path as the router writes it (``/items/<int:item_id>``): rule name, messages.
    display: str
    parts: tuple[Part, ...]
    #: ``None``: every method.
    methods: frozenset[str] | None
    #: Where decorators may have left marks, most specific first.
    endpoints: tuple[object, ...]
    #: Why the translation is wider than the router (``None`` when exact).
    note: str | None = None


class Routes(NamedTuple):
    """What an adapter read: the routes in the router's order, and notes on what it
    could not read (said once, never fatal)."""

    framework: str
    routes: tuple[Route, ...]
    notes: tuple[str, ...] = ()
    #: The router tries static paths before parameters (werkzeug, Litestar); else it
    #: tries routes in order (Starlette, Django).
    static_first: bool = False


class _RouteMatcher:
    """Matches a normalised request path against a route's pattern.

    The pattern is the router's (its converters' regexes); normalisation drops a
    trailing slash the router may require (Django's ``items/<int:pk>/``, Starlette's
    empty ``{rest:path}``), so the path with a slash added is tried too. *excluded* are
    the static paths the router sends to another route first (``/items/special`` beside
    ``/items/{id}``), whatever the method.
    """

    __slots__ = ("excluded", "pattern")

    def __init__(self, pattern: re.Pattern[str], excluded: frozenset[str] = frozenset()
                 ) -> None:
        self.pattern = pattern
        self.excluded = excluded

    def fullmatch(self, string: str, /) -> re.Match[str] | None:
        if string in self.excluded:
            return None
        return self.pattern.fullmatch(string) or self.pattern.fullmatch(string + "/")

    def __repr__(self) -> str:
        return f"_RouteMatcher({self.pattern.pattern!r})"


_GROUP = re.compile(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>")


def route_pattern(route: Route) -> re.Pattern[str]:
    """The regex of *route*'s whole path. Group names are dropped, so that parameters
    named alike at two levels (a mount and its route) do not clash."""
    pieces = []
    for part in route.parts:
        if part.regex is None:
            pieces.append(re.escape(part.text))
        else:
            pieces.append("(?:" + _GROUP.sub("(?:", part.regex) + ")")
    return re.compile("".join(pieces))


def _matcher(route: Route, excluded: frozenset[str] = frozenset()) -> _RouteMatcher | None:
    if all(part.regex is None for part in route.parts):
        return None
    try:
        return _RouteMatcher(route_pattern(route), excluded)
    except re.error as error:
        # Fail safe: everything under the route's static prefix, said once.
        prefix = "".join(p.text for p in _static_prefix(route.parts))
        logger.warning("route %s: its pattern cannot be used (%s); its limits cover "
                       "every path under %r", route.display, error, prefix or "/")
        return _RouteMatcher(re.compile(re.escape(prefix.rstrip("/")) + "(?:/.*)?"))


def _static_prefix(parts: Sequence[Part]) -> list[Part]:
    out = []
    for part in parts:
        if part.regex is not None:
            break
        out.append(part)
    return out


def _static_path(route: Route) -> str | None:
    if any(part.regex is not None for part in route.parts):
        return None
    return "".join(part.text for part in route.parts) or "/"


def route_rules(routes: Routes) -> list[Rule]:
    """The rules the decorators on *routes* declare, each with its route's path.

    A rule without ``methods=`` takes its route's methods, so that a limit on the POST
    view of a path does not apply to the GET view of the same path. A rule without a
    ``name`` counts under the route's path as the router writes it.
    """
    rules: list[Rule] = []
    for index, route in enumerate(routes.routes):
        marks = marks_of(route.endpoints)
        if marks:
            excluded = _taken(routes, index)
            rules.extend(_placed(marked, route, excluded) for marked in marks)
    return rules


def _taken(routes: Routes, index: int) -> frozenset[str]:
    """The static paths the router gives to another route before route *index*.

    Only routes that take every method of route *index* are counted: where a method is
    left over, the router still sends that method to route *index*, which must then
    count it.
    """
    route = routes.routes[index]
    matcher = _matcher(route)
    if matcher is None:
        return frozenset()
    before = routes.routes if routes.static_first else routes.routes[:index]
    taken = set()
    for other in before:
        path = _static_path(other)
        if path is None or other is route:
            continue
        if other.methods is not None and (route.methods is None or not (
                route.methods <= other.methods)):
            continue
        path = compile_template(path)[0]
        if matcher.fullmatch(path) is not None:
            taken.add(path)
    return frozenset(taken)


def _placed(marked: Rule, route: Route, excluded: frozenset[str] = frozenset()) -> Rule:
    static = _static_path(route)
    methods = marked.methods if marked.methods is not None else route.methods
    rule = dataclasses.replace(
        marked, path=static or _PLACEHOLDER, methods=methods,
        name=marked.name or _name_of(route))
    if static is None:
        # The router's own pattern, not a template: what the router matches, the rule
        # matches (see _RouteMatcher); the placeholder path is never matched.
        compiled = dataclasses.replace(rule.compiled, template=route.display,
                                       regex=_matcher(route, excluded))
        object.__setattr__(rule, "_compiled", compiled)
    if route.note is not None:
        # Wider, never narrower: said once, at start-up, not a fault.
        logger.info("route %s: %s; its limits may cover more paths than the route",
                    route.display, route.note)
    return rule


def _name_of(route: Route) -> str:
    static = _static_path(route)
    if static is not None:
        # The normalised path, as a Rule for the same path would be named.
        return compile_template(static)[0]
    return route.display


# --- the drift check ---------------------------------------------------------------------

#: Values tried for a rule's parameters when asking whether it and a route overlap.
_SAMPLES = ("1", "a", "00000000-0000-0000-0000-000000000000")
_PARAM = re.compile(r"\{[^{}]*\}")


def _rule_samples(rule: Rule) -> list[str]:
    template = rule.compiled.template
    if rule.compiled.regex is None:
        return [template]
    return [_PARAM.sub(sample, template) for sample in _SAMPLES]


def route_example(route: Route) -> str | None:
    """A normalised path the route's pattern matches (``/items/1``), or ``None`` when
    none could be made up."""
    pieces = []
    for part in route.parts:
        if part.regex is None:
            pieces.append(part.text)
            continue
        text = example_of(part.regex)
        if text is None:
            return None
        pieces.append(text)
    return normalize_path("".join(pieces) or "/")


def _overlaps(rule: Rule, route: Route) -> bool:
    compiled = rule.compiled
    if compiled.methods is not None and route.methods is not None and not (
            compiled.methods & route.methods):
        return False
    method = next(iter(compiled.methods & route.methods)) if (
        compiled.methods is not None and route.methods is not None) else next(
        iter(compiled.methods or route.methods or {"GET"}))
    example = route_example(route)
    if example is not None and compiled.matches(example, method):
        return True
    matcher = _matcher(route)
    static = _static_path(route)
    for sample in _rule_samples(rule):
        if matcher is not None and matcher.fullmatch(sample) is not None:
            return True
        if static is not None and compile_template(static)[0] == sample:
            return True
    return False


def unmatched_rules(rules: Iterable[Rule], routes: Routes) -> list[Rule]:
    """The *rules* whose template matches no route: a typo, or a route renamed."""
    return [rule for rule in rules
            if not any(_overlaps(rule, route) for route in routes.routes)]


# --- the loader the middlewares call -----------------------------------------------------


class RouteLoader:
    """Reads an app's router once and builds the `Policy` with its decorated routes.

    Thread-safe: WSGI servers may start several first requests at once; one reads the
    router, the others wait for its policy.
    """

    __slots__ = ("_done", "_lock", "_policy")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._policy: Policy | None = None

    def load(self, options: MiddlewareOptions, candidates: Sequence[object]) -> Policy | None:
        """The policy of *options* plus the routes' decorators; ``None`` when nothing
        changes (no router found, or no decorator on it)."""
        with self._lock:
            if not self._done:
                self._policy = self._build(options, candidates)
                self._done = True
            return self._policy

    @staticmethod
    def _build(options: MiddlewareOptions, candidates: Sequence[object]) -> Policy | None:
        from ._routers import read_routes

        explicit: tuple[Rule, ...] = tuple(options.rules)
        try:
            routes = read_routes(candidates)
        except Exception:
            # A framework's internals changed under an adapter: the explicit rules still
            # apply, and the decorators' limits do not, which must be loud.
            logger.warning("could not read the routes of %r: @limit/@exempt on its "
                           "endpoints are not applied and rules are not checked",
                           candidates[-1] if candidates else None, exc_info=True)
            return None
        if routes is None:
            level = logging.WARNING if (_marked or _marked_unweakable) else logging.INFO
            logger.log(level, "no router found in %r: @limit/@exempt on its endpoints are "
                       "not applied and rules are not checked against its routes",
                       candidates[-1] if candidates else None)
            return None
        for note in routes.notes:
            logger.info("%s router: %s", routes.framework, note)
        for rule in unmatched_rules(explicit, routes):
            logger.warning("Rule(%r) matches no route of the %s app: check its path (a "
                           "typo, or a route renamed?)", rule.path, routes.framework)
        found = route_rules(routes)
        if not found:
            return None
        return dataclasses.replace(options, rules=(*explicit, *found)).policy()
