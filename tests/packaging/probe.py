"""Run by tests/packaging/test_dist.py with the python of a fresh venv that has only the
built wheel (and its required dependencies) installed: no extras, no source tree.

Usage: ``python probe.py SECTION`` with an optional JSON argument on stdin; prints one
JSON object of facts. The test makes the assertions, so a failure there shows what was
found, not a traceback from here. Only the standard library and ratelimit_mw are used.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.util
import inspect
import json
import pkgutil
import sys
from collections.abc import Callable
from typing import Any


def _error(exc: BaseException) -> dict[str, Any]:
    exc_type = type(exc)
    return {"type": f"{exc_type.__module__}.{exc_type.__qualname__}", "message": str(exc)}


def _resolve(dotted: str) -> object:
    """Import the longest importable module prefix of *dotted*, then getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def api(request: dict[str, Any]) -> dict[str, Any]:
    import ratelimit_mw

    names = list(ratelimit_mw.__all__)
    unresolved = [name for name in names if not hasattr(ratelimit_mw, name)]
    star: dict[str, Any] = {}
    exec("from ratelimit_mw import *", star)  # the names `import *` gives

    # The modules that __init__ imports from (``from .x import ...``, ``from . import x``).
    tree = ast.parse(inspect.getsource(ratelimit_mw))
    init_modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                init_modules.add(f"ratelimit_mw.{node.module}")
            else:
                init_modules.update(f"ratelimit_mw.{alias.name}" for alias in node.names)
    public_classes: dict[str, list[str]] = {}
    for module_name in sorted(init_modules):
        # Private modules too: the public names live there, and a public class of theirs
        # that __init__ does not export is a decision to allow-list, not an accident.
        module = importlib.import_module(module_name)
        candidates = getattr(module, "__all__", None) or [
            name for name, obj in vars(module).items()
            if not name.startswith("_") and getattr(obj, "__module__", None) == module_name
        ]
        public_classes[module_name] = sorted(
            name for name in candidates if inspect.isclass(getattr(module, name, None)))

    # Every module of the package imports with no extra installed.
    import_errors: dict[str, Any] = {}
    modules = ["ratelimit_mw"]
    for info in pkgutil.walk_packages(ratelimit_mw.__path__, "ratelimit_mw."):
        modules.append(info.name)
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            import_errors[info.name] = _error(exc)

    documented: dict[str, Any] = {}
    for dotted in request.get("documented", []):
        try:
            _resolve(dotted)
            documented[dotted] = None
        except Exception as exc:
            documented[dotted] = _error(exc)

    return {
        "version": ratelimit_mw.__version__,
        "file": ratelimit_mw.__file__,
        "all": names,
        "unresolved": unresolved,
        "star": sorted(name for name in star if not name.startswith("__")),
        "public_classes": public_classes,
        "modules": modules,
        "import_errors": import_errors,
        "documented": documented,
    }


def extras_absent(request: dict[str, Any]) -> dict[str, Any]:
    return {name: importlib.util.find_spec(name) is not None
            for name in request.get("modules", [])}


def memory(request: dict[str, Any]) -> dict[str, Any]:
    """The ASGI and WSGI middlewares and the limiter on memory://, no framework."""
    from ratelimit_mw import RateLimiter, RateLimitMiddleware, Rule, WSGIRateLimitMiddleware

    async def app(scope: dict[str, Any], receive: Callable[..., Any],
                  send: Callable[..., Any]) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = RateLimitMiddleware(app, storage="memory://", default_limits="2/minute",
                                     rules=[Rule("/health", exempt=True)])

    async def call(path: str) -> dict[str, Any]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"testserver")], "client": ("203.0.113.7", 50000),
                 "server": ("testserver", 80), "state": {}}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await middleware(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return {"status": start["status"],
                "headers": sorted({k.decode().lower() for k, _ in start["headers"]}),
                "body": body.decode(), "decision": repr(scope["state"].get("ratelimit"))}

    async def asgi_calls() -> list[dict[str, Any]]:
        return [await call(path) for path in ("/a", "/a", "/a", "/health")]

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wsgi = WSGIRateLimitMiddleware(wsgi_app, storage="memory://", default_limits="1/minute")
    wsgi_statuses = []
    for _ in range(2):
        statuses: list[str] = []

        def start_response(status: str, headers: Any, *_: Any,
                           statuses: list[str] = statuses) -> None:
            statuses.append(status)

        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/a", "SCRIPT_NAME": "",
                   "QUERY_STRING": "", "SERVER_NAME": "testserver", "SERVER_PORT": "80",
                   "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "203.0.113.7",
                   "wsgi.url_scheme": "http"}
        body = b"".join(wsgi(environ, start_response))
        wsgi_statuses.append((statuses[0], body.decode()[:20]))

    limiter = RateLimiter("memory://")
    hits = [limiter.hit("1/minute", "user:42").allowed for _ in range(2)]
    limiter.close()
    return {"asgi": asyncio.run(asgi_calls()), "wsgi": wsgi_statuses, "limiter": hits}


def missing_extras(request: dict[str, Any]) -> dict[str, Any]:
    """What asking for a feature of a missing extra raises."""
    import ratelimit_mw
    from ratelimit_mw import (
        AsyncRateLimiter,
        AsyncRedisCache,
        RateLimiter,
        RateLimitMiddleware,
        RedisCache,
        WSGIRateLimitMiddleware,
    )

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never called
        raise AssertionError

    def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:  # never called
        raise AssertionError

    def metrics() -> object:
        from ratelimit_mw.metrics import PrometheusMetrics

        return PrometheusMetrics()

    attempts: dict[str, Callable[[], object]] = {"PrometheusMetrics()": metrics}
    for url in request["urls"]:
        attempts[f"RateLimiter({url!r})"] = lambda url=url: RateLimiter(url)
        attempts[f"AsyncRateLimiter({url!r})"] = lambda url=url: AsyncRateLimiter(url)
    url = request["urls"][0]
    attempts["RateLimitMiddleware(storage=redis://)"] = lambda: RateLimitMiddleware(
        app, storage=url)
    attempts["WSGIRateLimitMiddleware(storage=redis://)"] = lambda: WSGIRateLimitMiddleware(
        wsgi_app, storage=url)
    attempts["RedisCache(redis://)"] = lambda: RedisCache(url)
    attempts["AsyncRedisCache(redis://)"] = lambda: AsyncRedisCache(url)

    results: dict[str, Any] = {}
    for title, attempt in attempts.items():
        try:
            attempt()
        except Exception as exc:
            results[title] = {**_error(exc), "is_configuration_error": isinstance(
                exc, ratelimit_mw.ConfigurationError)}
        else:
            results[title] = None
    return results


SECTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "api": api, "extras_absent": extras_absent, "memory": memory,
    "missing_extras": missing_extras,
}

if __name__ == "__main__":
    text = sys.stdin.read()
    print(json.dumps(SECTIONS[sys.argv[1]](json.loads(text) if text.strip() else {})))
