"""Find the fenced code blocks of README.md and docs/**/*.md, and run the Python ones.

The convention every block follows is written down in tests/docs/test_code_blocks.py
(and, for writers, in docs/contributing-docs.md).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: Executed: every block with one of these languages runs (unless marked not runnable).
PYTHON = frozenset({"python", "py"})
#: Checked, not executed: parsed (TOML, JSON) or, for shell, every ``ratelimit-mw``
#: command line is parsed by the real CLI parser. Never run: they need a shell.
TOML = frozenset({"toml"})
JSON = frozenset({"json"})
SHELL = frozenset({"bash", "console", "shell", "sh"})
#: Not code: program output, HTTP messages, diagrams, synopses, Redis keys.
TEXT = frozenset({"text"})

KNOWN = PYTHON | TOML | JSON | SHELL | TEXT

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*not-runnable:\s*(?P<reason>\S.*?)\s*-->\s*$")
_TITLE = re.compile(r"""\btitle=(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>\S+))""")

#: Redis URLs the docs use for "your Redis"; the tests point them at the test db instead.
_REDIS_URL = re.compile(
    r"redis://(?:[^\s/@\"']*@)?(?:localhost|127\.0\.0\.1|redis)(?::6379)?(?:/\d+)?(?=[\"'\s])"
)


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    code: str
    not_runnable: str | None  # the reason given by a <!-- not-runnable: ... --> marker

    @property
    def lang(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""

    @property
    def title(self) -> str | None:
        match = _TITLE.search(self.info)
        if not match:
            return None
        return match.group("dq") or match.group("sq") or match.group("bare")

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in PYTHON and self.not_runnable is None


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of *path*, in order, with the marker on the line before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening.group("fence")
        indent = len(opening.group("indent"))
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = _FENCE.match(lines[i])
            if (closing and closing.group("fence")[0] == fence[0]
                    and len(closing.group("fence")) >= len(fence)
                    and not closing.group("info").strip()):
                break
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        else:
            raise AssertionError(f"{path}:{start + 1}: unclosed code fence")
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = _MARKER.match(lines[before]) if before >= 0 else None
        found.append(Block(path, start + 1, opening.group("info").strip(),
                           "\n".join(body) + "\n", marker.group("reason") if marker else None))
        i += 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in markdown_files() for block in blocks(path)]


def for_tests(code: str, redis_url: str) -> str:
    """*code* with every "your Redis" URL pointing at the tests' Redis db."""
    return _REDIS_URL.sub(redis_url, code)


# --- the apps a block may wrap -------------------------------------------------------


async def tiny_asgi_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that answers 200 ``ok`` to every HTTP request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def tiny_wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    """A WSGI app that answers 200 ``ok`` to every request."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def tiny_flask_app() -> Any:
    """A Flask app that answers 200 ``ok`` on every path and method."""
    from flask import Flask

    app = Flask("docs")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
    def anything(path: str) -> str:
        return "ok"

    return app


def _reads_app_first(tree: ast.Module) -> bool:
    """Does a top-level statement read ``app`` before the block assigns it?"""
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if statement.name == "app":
                return False
            continue
        targets: list[ast.AST] = []
        values: list[ast.AST] = [statement]
        if isinstance(statement, ast.Assign):
            targets, values = list(statement.targets), [statement.value]
        elif isinstance(statement, ast.AnnAssign | ast.AugAssign):
            targets = [statement.target]
            values = [statement.value] if statement.value is not None else []
        for value in values:
            for node in ast.walk(value):
                if isinstance(node, ast.Name) and node.id == "app" and isinstance(
                        node.ctx, ast.Load):
                    return True
        for target in targets:
            for node in ast.walk(target):
                if isinstance(node, ast.Name) and node.id == "app":
                    return False
                if isinstance(node, ast.Attribute | ast.Subscript):
                    for inner in ast.walk(node):
                        if isinstance(inner, ast.Name) and inner.id == "app":
                            return True
    return False


def seed_app(code: str, tree: ast.Module) -> Any | None:
    """The app a block wraps without defining it, or ``None`` (it uses the page's own).

    A block that reads ``app`` before assigning it and hands it to a middleware gets a
    fresh tiny app of the kind that middleware wants: a Flask app when it wraps
    ``app.wsgi_app``, a WSGI callable for a WSGI middleware, an ASGI app otherwise.
    """
    if not _reads_app_first(tree):
        return None
    if "app.wsgi_app" in code:
        return tiny_flask_app()
    if re.search(r"WSGI\w*Middleware\(\s*app\b", code):
        return tiny_wsgi_app
    if re.search(r"Middleware\(\s*app\b", code):
        return tiny_asgi_app
    return None


# --- running a page -------------------------------------------------------------------


@dataclass
class PageRun:
    """The namespace after each Python block of a page, for focused checks."""

    path: Path
    ran: list[Block] = field(default_factory=list)
    namespaces: list[dict[str, Any]] = field(default_factory=list)

    def after(self, snippet: str) -> dict[str, Any]:
        """The namespace right after the (first) block containing *snippet*."""
        for block, namespace in zip(self.ran, self.namespaces, strict=True):
            if snippet in block.code:
                return namespace
        raise AssertionError(f"no executed block of {self.path} contains {snippet!r}")


def _run_doctest(block: Block, code: str, namespace: dict[str, Any]) -> None:
    import doctest

    parser = doctest.DocTestParser()
    test = parser.get_doctest(code, namespace, block.where, str(block.path), block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures: list[str] = []
    runner.run(test, out=failures.append, clear_globs=False)
    if runner.failures:
        raise AssertionError(f"{block.where}: doctest failed\n" + "".join(failures))


def run_block(block: Block, namespace: dict[str, Any], redis_url: str) -> None:
    """Execute one Python block in *namespace* (top-level ``await`` allowed)."""
    code = for_tests(block.code, redis_url)
    if code.lstrip().startswith(">>>"):
        _run_doctest(block, code, namespace)
        return
    tree = ast.parse(code, filename=block.where)
    seeded = seed_app(code, tree)
    if seeded is not None:
        namespace["app"] = seeded
    compiled = compile(tree, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if compiled.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(compiled, namespace))
    else:
        exec(compiled, namespace)


def run_page(path: Path, redis_url: str) -> PageRun:
    """Run every runnable Python block of *path*, in order, in one namespace."""
    run = PageRun(path)
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem.replace('-', '_')}"}
    for block in blocks(path):
        if not block.runs:
            continue
        try:
            run_block(block, namespace, redis_url)
        except Exception as error:
            raise AssertionError(
                f"{block.where}: the block failed: {type(error).__name__}: {error}\n"
                + textwrap.indent(block.code, "    | ")
            ) from error
        run.ran.append(block)
        run.namespaces.append(dict(namespace))
    return run


def titled_files(path: Path) -> list[Block]:
    """The blocks of *path* with a ``title="name"``: the files its Python blocks read."""
    return [block for block in blocks(path) if block.title and block.lang in TOML]
