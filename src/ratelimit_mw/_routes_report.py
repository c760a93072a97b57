"""``ratelimit-mw config --app module:app``: every route of an app with the limits that
apply to it, and the rules that match no route."""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from typing import Any, TextIO

from ._middleware import MiddlewareBase
from ._options import MiddlewareOptions
from ._request import RequestInfo
from ._routers import read_routes, wrapped_chain
from ._routes import Route, route_example, route_rules, unmatched_rules
from ._rules import CompiledRule
from .errors import ConfigurationError

__all__ = ["import_app", "report_routes"]


def import_app(target: str) -> Any:
    """The object *target* (``module:attribute``) names, imported from the current
    directory as servers do."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app {target!r}: write module:attribute, e.g. "
                                 "myproject.main:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"--app {target!r}: cannot import {module_name!r} "
                                 f"({error})") from None
    for name in attribute.split("."):
        try:
            found = getattr(found, name)
        except AttributeError:
            raise ConfigurationError(f"--app {target!r}: {module_name} has no "
                                     f"{attribute!r}") from None
    return found


def _options_of(app: Any) -> MiddlewareOptions | None:
    """The options of the rate-limit middleware in *app*'s wrapper chain, or of one
    added with Starlette's ``add_middleware`` (built at the first request)."""
    for obj in wrapped_chain([app]):
        if isinstance(obj, MiddlewareBase):
            return obj.options
        for entry in getattr(obj, "user_middleware", None) or ():
            cls = getattr(entry, "cls", None)
            if isinstance(cls, type) and issubclass(cls, MiddlewareBase):
                return MiddlewareOptions(**getattr(entry, "kwargs", {}))
    return None


def _limits(rule: CompiledRule | None, default: str) -> str:
    if rule is None:
        return f"default: {default}"
    if rule.exempt:
        return f"{rule.name}: exempt"
    if rule.limits_function is not None:
        text = "chosen per request"
    elif rule.layers:
        text = "; ".join(
            (f"{layer.name}: " if layer.name else "") + ", ".join(
                str(item) for item in layer.items) for layer in rule.layers)
    elif rule.messages:
        text = "handshake not limited"  # messages= alone takes no default_limits
    else:
        text = default
    if rule.messages:
        text += "; messages: " + ", ".join(str(item) for item in rule.messages) + (
            " per connection")
    if rule.exempt_when is not None:
        text += " (exempt_when)"
    return f"{rule.name}: {text}"


def _method_list(route: Route) -> list[str]:
    if route.methods is None:
        return ["*"]
    # HEAD follows GET and OPTIONS is the framework's: shown only when alone.
    shown = sorted(route.methods - {"HEAD", "OPTIONS"})
    return shown or sorted(route.methods)


def report_routes(target: str, out: TextIO, fallback: MiddlewareOptions) -> int:
    """Write the routes of the app *target* names with their limits; 0 on success."""
    app = import_app(target)
    options = _options_of(app)
    source = "the middleware in the app"
    if options is None:
        options, source = fallback, "the configuration (no middleware found in the app)"
    routes = read_routes([app])
    out.write(f"limits from {source}\n")
    if routes is None:
        out.write(f"no router found in {target}: routes cannot be listed, @limit "
                  "decorators are not applied and rules are not checked\n")
        return 0
    explicit = tuple(options.rules)
    decorated = route_rules(routes)
    policy = dataclasses.replace(options, rules=(*explicit, *decorated)).policy()
    default = _default_text(options)
    from_decorator = {id(rule.compiled) for rule in decorated}
    out.write(f"routes of {target} ({routes.framework}):\n")
    # One row per path and outcome, its methods joined (Litestar lists a handler per
    # method, and its OPTIONS handler apart).
    rows: dict[tuple[str, str], list[str]] = {}
    for route in routes.routes:
        example = route_example(route)
        for method in _method_list(route):
            if example is None:
                line = "(no example path: not checked)"
            else:
                found = policy.table.match(RequestInfo(
                    "GET" if method == "*" else method, example))
                origin = "" if found is None else (
                    " [@limit]" if id(found) in from_decorator else " [rules=]")
                line = _limits(found, default) + origin
            rows.setdefault((route.display, line), []).append(method)
    width = max((len(display) for display, _ in rows), default=0)
    for (display, line), methods in rows.items():
        out.write(f"  {','.join(methods):11} {display:{width}}  {line}\n")
    for note in routes.notes:
        out.write(f"note: {note}\n")
    unmatched = unmatched_rules(explicit, routes)
    if unmatched:
        out.write("rules that match no route:\n")
        for rule in unmatched:
            out.write(f"  Rule({rule.path!r})\n")
    return 0


def _default_text(options: MiddlewareOptions) -> str:
    spec = options.default_limits
    if spec is None:
        return "not limited"
    if callable(spec):
        return "chosen per request"
    return str(spec) if isinstance(spec, str) else repr(spec)
