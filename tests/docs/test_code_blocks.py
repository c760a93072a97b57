"""Every fenced code block in README.md and docs/**/*.md is executed, checked, or marked.

The convention (also in docs/contributing-docs.md), by the fence's info string:

- ``python`` (or ``py``): **executed** here. The blocks of one page run in order in one
  namespace, so a block may use what an earlier one defined. A block that starts with
  ``>>>`` is run as a doctest (its output is compared). Top-level ``await`` works.
  Redis URLs such as ``redis://localhost:6379/0`` are pointed at the tests' Redis db
  (``redis_url``, db 13), and ``$REDIS_URL`` is set to it too. A block that hands an
  ``app`` it did not define to a middleware (``RateLimitMiddleware(app, ...)``,
  ``app.wsgi_app = ...``) gets a fresh tiny ASGI app, WSGI app or Flask app.
  A Python block that must not run (it starts a server, needs a service the tests do
  not have, or is an illustration) says why on the line before its fence::

      <!-- not-runnable: starts uvicorn -->
      ```python

- ``toml``: parsed with tomllib; a block with ``title="name.toml"`` is a ratelimit-mw
  configuration file: it is validated with ``ratelimit_mw.config.load_settings`` and
  written under that name to the page's working directory, where the page's Python
  blocks can load it.
- ``json``: parsed with ``json.loads``.
- ``bash``, ``console``, ``shell``, ``sh``: shell, never run (they need a shell, servers
  or the network). Every ``ratelimit-mw ...`` command in them (after a ``$`` prompt in
  ``console`` blocks) is parsed by the real CLI parser, so options cannot drift.
- ``text``: not code: output, HTTP messages, diagrams, synopses. Never run.
- Anything else, or a fence without a language, fails ``test_every_block_is_classified``.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tests.docs.codeblocks import (
    JSON,
    KNOWN,
    PYTHON,
    ROOT,
    SHELL,
    TOML,
    Block,
    all_blocks,
    blocks,
    markdown_files,
    run_page,
)
from tests.docs.conftest import write_titled_files

PAGES_WITH_PYTHON = [path for path in markdown_files() if any(b.runs for b in blocks(path))]


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_block_is_classified() -> None:
    problems = []
    for block in all_blocks():
        if block.lang not in KNOWN:
            problems.append(f"{block.where}: fence info {block.info!r}: use one of "
                            f"{sorted(KNOWN)} (see tests/docs/test_code_blocks.py)")
        elif block.not_runnable is not None and block.lang not in PYTHON | TOML:
            problems.append(f"{block.where}: a not-runnable marker on a {block.lang} block, "
                            "which never runs anyway")
    assert not problems, "\n".join(problems)


def test_the_docs_have_executed_blocks() -> None:
    executed = [block for block in all_blocks() if block.runs]
    assert len(executed) >= 40
    readme = [block for block in executed if block.path.name == "README.md"]
    assert readme, "README.md has Python blocks; they run too"


@pytest.mark.redis
@pytest.mark.parametrize("path", PAGES_WITH_PYTHON, ids=_page_id)
def test_python_blocks_run(path: Path, page_env: Path, redis_url: str) -> None:
    write_titled_files(path, page_env, redis_url)
    run = run_page(path, redis_url)
    assert run.ran


# --- TOML, JSON and shell blocks ------------------------------------------------------


def _blocks_of(langs: frozenset[str]) -> list[Block]:
    return [block for block in all_blocks() if block.lang in langs]


@pytest.mark.parametrize("block", _blocks_of(TOML), ids=lambda b: b.where)
def test_toml_blocks_parse_and_validate(block: Block, tmp_path: Path) -> None:
    if block.not_runnable is not None:
        tomllib.loads(block.code)  # still TOML
        return
    tomllib.loads(block.code)
    if block.title and block.title.endswith(".toml"):
        from ratelimit_mw.config import load_settings

        file = tmp_path / block.title
        file.write_text(block.code, encoding="utf-8")
        load_settings(file, environ={})


@pytest.mark.parametrize("block", _blocks_of(JSON), ids=lambda b: b.where)
def test_json_blocks_parse(block: Block) -> None:
    json.loads(block.code)


def _commands(block: Block) -> Iterator[list[str]]:
    """The ``ratelimit-mw`` command lines of a shell block, as argv lists."""
    lines = block.code.splitlines()
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line)
    for line in joined:
        text = line.strip()
        if block.lang == "console":
            if not text.startswith("$ "):
                continue
            text = text[2:]
        text = text.split(" #", 1)[0]
        try:
            words = shlex.split(text)
        except ValueError:
            continue
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # VAR=value before the command
        if words[:1] == ["ratelimit-mw"]:
            yield words[1:]
        elif words[:3] == ["python", "-m", "ratelimit_mw.cli"]:
            yield words[3:]


SHELL_COMMANDS = [(block, argv) for block in _blocks_of(SHELL) for argv in _commands(block)]


@pytest.mark.parametrize(("block", "argv"), SHELL_COMMANDS,
                         ids=[f"{b.where}:{' '.join(a)}" for b, a in SHELL_COMMANDS])
def test_shell_commands_parse(block: Block, argv: list[str]) -> None:
    from ratelimit_mw.cli import build_parser

    if argv in (["--help"], ["-h"]):
        return
    with contextlib.redirect_stderr(sys.stdout):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_:
            pytest.fail(f"{block.where}: `ratelimit-mw {' '.join(argv)}` does not parse "
                        f"(exit {exit_.code})")


def test_shell_commands_are_found() -> None:
    assert len(SHELL_COMMANDS) >= 10
