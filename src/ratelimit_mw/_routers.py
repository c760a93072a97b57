"""Reading an app's routes: one adapter per framework, found from the wrapped app.

A framework is only looked at when the process already imported it (``sys.modules``):
an app cannot be a Flask app if Flask was never imported, so importing ``ratelimit_mw``
imports no framework. Each adapter translates the router's patterns into `Part`s whose
regexes are the router's own converters', so a rule matches what the route matches.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from ._routes import Part, Route, Routes

__all__ = ["find_app", "read_routes", "wrapped_chain"]

#: Attributes through which wrappers reach the app they wrap (ASGI middlewares' ``app``,
#: a Flask ``wsgi_app`` bound method's ``__self__``).
_WRAPPED = ("app", "__self__", "wsgi_app", "application")
#: Objects looked at before giving up: a wrapper chain is short.
_STEPS = 64


def wrapped_chain(candidates: Sequence[object]) -> Iterator[object]:
    """Each candidate, then what it wraps, breadth first, each object once.

    A wrapper of unknown kind (a dispatcher of yours holding the framework's app under
    any attribute name) is searched through its instance attributes that are callable.
    """
    seen: set[int] = set()
    queue = [c for c in candidates if c is not None]
    steps = 0
    while queue and steps < _STEPS:
        steps += 1
        obj = queue.pop(0)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        yield obj
        queue += _wrapped_by(obj)


def _wrapped_by(obj: object) -> list[object]:
    """The callables *obj* holds; none when reading them fails (a proxy such as
    werkzeug's ``current_app`` raises outside its context)."""
    with contextlib.suppress(Exception):
        inner = [getattr(obj, name, None) for name in _WRAPPED]
        if not isinstance(obj, type) and hasattr(obj, "__dict__"):
            inner += list(vars(obj).values())
        return [value for value in inner if value is not None and callable(value)]
    return []


def find_app(candidates: Sequence[object]) -> tuple[str, Any] | None:
    """The first framework app or router in *candidates* or what they wrap."""
    for obj in wrapped_chain(candidates):
        framework = _framework_of(obj)
        if framework is not None:
            return framework, obj
    return None


def _framework_of(obj: object) -> str | None:
    # isinstance() asks a proxy for its __class__, which may raise outside its context.
    with contextlib.suppress(Exception):
        for framework, test in _DETECTORS:
            if test(obj):
                return framework
    return None


def read_routes(candidates: Sequence[object]) -> Routes | None:
    """The routes of the app among *candidates*; ``None`` when no router can be read."""
    found = find_app(candidates)
    if found is None:
        return None
    framework, app = found
    return _READERS[framework](app)


# --- Starlette and FastAPI ---------------------------------------------------------------

_STARLETTE_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(:[a-zA-Z_][a-zA-Z0-9_]*)?}")


def _is_starlette(obj: object) -> bool:
    routing = sys.modules.get("starlette.routing")
    applications = sys.modules.get("starlette.applications")
    return (routing is not None and isinstance(obj, routing.Router)) or (
        applications is not None and isinstance(obj, applications.Starlette))


def _starlette_parts(path: str, convertors: dict[str, Any]) -> list[Part]:
    parts: list[Part] = []
    pos = 0
    for match in _STARLETTE_PARAM.finditer(path):
        parts.append(Part(path[pos:match.start()]))
        convertor = convertors.get(match.group(1))
        regex = getattr(convertor, "regex", None)
        # Every convertor has a regex; one that does not is matched as any text.
        parts.append(Part(match.group(0), regex if isinstance(regex, str) else ".*"))
        pos = match.end()
    parts.append(Part(path[pos:]))
    return [part for part in parts if part.text or part.regex is not None]


def _read_starlette(app: Any) -> Routes:
    routing = sys.modules["starlette.routing"]
    router = app if isinstance(app, routing.Router) else app.router
    routes: list[Route] = []
    notes: list[str] = []

    def walk(entries: Sequence[Any], prefix: list[Part], display: str) -> None:
        for entry in entries:
            included = getattr(getattr(entry, "include_context", None), "prefix", None)
            if isinstance(included, str) and hasattr(entry, "original_router"):
                # FastAPI's include_router keeps the router and its prefix apart (0.16x).
                convertors = routing.compile_path(included)[2] if included else {}
                walk(entry.original_router.routes,
                     prefix + _starlette_parts(included, convertors), display + included)
                continue
            if not hasattr(entry, "path"):
                notes.append(f"route {type(entry).__name__} is of a kind not read; "
                             "limits declared under it are not found")
                continue
            parts = prefix + _starlette_parts(entry.path, entry.param_convertors)
            shown = display + entry.path
            if isinstance(entry, routing.Route):
                methods = frozenset(entry.methods) if entry.methods else None
                routes.append(Route(shown or "/", tuple(parts), methods,
                                    _starlette_endpoints(entry.endpoint)))
            elif isinstance(entry, routing.WebSocketRoute):
                routes.append(Route(shown or "/", tuple(parts), None,
                                    _starlette_endpoints(entry.endpoint)))
            elif isinstance(entry, routing.Mount):
                inner = entry.routes
                if inner:
                    walk(inner, parts, shown)
                else:
                    # A mounted app we cannot read (static files, a WSGI app): limits on
                    # the mount's app still apply to everything under it.
                    notes.append(f"the app mounted at {shown!r} has no routes to read")
                    routes.append(Route(shown + "/{path:path}",
                                        (*parts, Part("{path:path}", "(?:/.*)?")), None,
                                        (entry.app,)))
            elif isinstance(entry, routing.Host):
                # The host is not part of a rule: routes under it are read as if on any
                # host, so their limits apply at least where the router sends them.
                walk(entry.routes, prefix, display)
            else:
                notes.append(f"route {type(entry).__name__} at {shown!r} is of a kind not "
                             "read; limits declared on it are not found")

    walk(router.routes, [], "")
    framework = "fastapi" if type(app).__module__.startswith("fastapi") else "starlette"
    return Routes(framework, tuple(routes), tuple(notes))


def _starlette_endpoints(endpoint: Any) -> tuple[object, ...]:
    # functools.partial endpoints keep their function in .func.
    return (endpoint, getattr(endpoint, "func", None))


# --- Litestar ----------------------------------------------------------------------------

_LITESTAR_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?}")


def _is_litestar(obj: object) -> bool:
    module = sys.modules.get("litestar.app")
    return module is not None and isinstance(obj, module.Litestar)


def _read_litestar(app: Any) -> Routes:
    routes: list[Route] = []
    for route in app.routes:
        parts: list[Part] = []
        pos = 0
        path: str = route.path
        widened = []
        for match in _LITESTAR_PARAM.finditer(path):
            parts.append(Part(path[pos:match.start()]))
            # A "path" parameter takes the rest, slashes and all; any other type is one
            # segment the type's parser then checks (a superset of what it accepts).
            kind = match.group(2) or "str"
            parts.append(Part(match.group(0), ".*" if kind == "path" else "[^/]+"))
            if kind not in ("str", "path"):
                widened.append(match.group(0))
            pos = match.end()
        parts.append(Part(path[pos:]))
        parts = [p for p in parts if p.text or p.regex is not None]
        handlers = getattr(route, "route_handlers", None) or [
            getattr(route, "route_handler", None)]
        for handler in handlers:
            if handler is None:
                continue
            methods = getattr(handler, "http_methods", None)
            routes.append(Route(
                path or "/", tuple(parts), frozenset(methods) if methods else None,
                (getattr(handler, "fn", None), handler),
                f"{', '.join(widened)} matched as any one segment" if widened else None))
    return Routes("litestar", tuple(routes), static_first=True)


# --- Flask -------------------------------------------------------------------------------

_WERKZEUG_PARAM = re.compile(
    r"<(?:(?P<converter>[a-zA-Z_][a-zA-Z0-9_]*)(?:\((?P<args>.*?)\))?:)?"
    r"(?P<variable>[a-zA-Z_][a-zA-Z0-9_]*)>")


def _is_flask(obj: object) -> bool:
    module = sys.modules.get("flask.app")
    return module is not None and isinstance(obj, module.Flask)


def _read_flask(app: Any) -> Routes:
    routes: list[Route] = []
    notes: list[str] = []
    for rule in app.url_map.iter_rules():
        converters: dict[str, Any] = getattr(rule, "_converters", {})
        parts: list[Part] = []
        pos = 0
        text: str = rule.rule
        for match in _WERKZEUG_PARAM.finditer(text):
            parts.append(Part(text[pos:match.start()]))
            regex = getattr(converters.get(match.group("variable")), "regex", None)
            if not isinstance(regex, str):
                regex = ".*"
                notes.append(f"{text}: converter of {match.group(0)} has no regex; read "
                             "as any text")
            parts.append(Part(match.group(0), regex))
            pos = match.end()
        parts.append(Part(text[pos:]))
        parts = [p for p in parts if p.text or p.regex is not None]
        if rule.host or rule.subdomain:
            notes.append(f"{text}: its host/subdomain is not part of the rule")
        view = app.view_functions.get(rule.endpoint)
        # The view, then its blueprints from the innermost out ("outer.inner.view").
        names = rule.endpoint.split(".")[:-1]
        blueprints = [app.blueprints.get(".".join(names[:i]))
                      for i in range(len(names), 0, -1)]
        routes.append(Route(text, tuple(parts),
                            frozenset(rule.methods) if rule.methods else None,
                            (view, getattr(view, "view_class", None), *blueprints)))
    return Routes("flask", tuple(routes), tuple(notes), static_first=True)


# --- Django ------------------------------------------------------------------------------


def _is_django(obj: object) -> bool:
    # A handler exists only once Django is set up, so its settings and URLconf are there;
    # the resolver is what Django's own middleware (ratelimit_mw.django) hands over.
    handlers = sys.modules.get("django.core.handlers.base")
    urls = sys.modules.get("django.urls")
    return urls is not None and (isinstance(obj, urls.URLResolver) or (
        handlers is not None and isinstance(obj, handlers.BaseHandler)))


#: Anchors and look-behinds a re_path() may hold inside: composed after its prefix they
#: would mean something other than what they mean to Django.
_INNER_ANCHOR = re.compile(r"(?<!\\)(?:\^|\$)|\\[AZbB]|\(\?<[=!]")


def _django_piece(regex: str, leaf: bool) -> str:
    # Django searches a pattern (re.search) unless it is anchored: a pattern without '^'
    # may start anywhere, a leaf without '$' or '\Z' may end anywhere.
    piece = regex[1:] if regex.startswith("^") else ".*?" + regex
    if leaf:
        if piece.endswith("\\Z"):
            piece = piece[:-2]
        elif piece.endswith("$") and not piece.endswith("\\$"):
            piece = piece[:-1]
        else:
            piece += ".*"
    if _INNER_ANCHOR.search(piece.replace("[^", "[")):
        # Fail safe: anything at this level (read_routes says so through the note).
        return ".*"
    return piece


_DJANGO_PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<parameter>[^>]+)>")


def _django_parts(pattern: Any, regex: str, leaf: bool) -> tuple[list[Part], str | None]:
    """A ``path()`` pattern as literal text and its converters' regexes; a ``re_path()``
    (or anything else) as its whole regex. The note says when that had to be widened."""
    resolvers: Any = sys.modules["django.urls.resolvers"]
    if not isinstance(pattern, resolvers.RoutePattern):
        piece = _django_piece(regex, leaf)
        widened = piece == ".*" and regex.lstrip("^") not in ("", ".*", ".*$")
        note = f"{str(pattern)!r} has inner anchors: matched as any text" if (
            widened) else None
        return [Part(str(pattern), piece)], note
    route = str(pattern)
    parts: list[Part] = []
    pos = 0
    for match in _DJANGO_PARAM.finditer(route):
        parts.append(Part(route[pos:match.start()]))
        converter = pattern.converters.get(match.group("parameter"))
        parts.append(Part(match.group(0), getattr(converter, "regex", "[^/]+")))
        pos = match.end()
    parts.append(Part(route[pos:]))
    return [p for p in parts if p.text or p.regex is not None], None


def _read_django(_: Any) -> Routes:
    urls: Any = sys.modules["django.urls"]
    URLPattern, URLResolver = urls.URLPattern, urls.URLResolver  # noqa: N806

    routes: list[Route] = []
    notes: list[str] = []

    def walk(patterns: Sequence[Any], prefix: list[Part], display: str,
             widened: str | None) -> None:
        for entry in patterns:
            pattern = entry.pattern
            regex = getattr(getattr(pattern, "regex", None), "pattern", None)
            shown = display + str(pattern)
            if not isinstance(regex, str):
                notes.append(f"{shown!r}: a pattern without a regex is not read")
                continue
            parts, note = _django_parts(pattern, regex, isinstance(entry, URLPattern))
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, [*prefix, *parts], shown, note or widened)
            elif isinstance(entry, URLPattern):
                callback = entry.callback
                routes.append(Route(
                    "/" + shown, (Part("/"), *prefix, *parts), None,
                    (callback, getattr(callback, "view_class", None),
                     getattr(callback, "cls", None)), note or widened))

    walk(urls.get_resolver().url_patterns, [], "", None)
    return Routes("django", tuple(routes), tuple(notes))


_DETECTORS = (("starlette", _is_starlette), ("litestar", _is_litestar),
              ("flask", _is_flask), ("django", _is_django))
_READERS = {"starlette": _read_starlette, "litestar": _read_litestar,
            "flask": _read_flask, "django": _read_django}
