"""The cache under real servers on 127.0.0.1: uvicorn (ASGI) and gunicorn with threads
(WSGI), on the memory store and a real Redis, with clients on their own connections."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.realservers import HOST, ROOT, Server, serve_command

ROUNDS = 150


def _argv(kind: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        if kind == "asgi":
            return [sys.executable, "-m", "uvicorn", "tests.cache.serverapps:create_asgi_app",
                    "--factory", "--host", HOST, "--port", str(port), "--log-level",
                    "warning", "--no-access-log", "--timeout-graceful-shutdown", "2"]
        return [sys.executable, "-m", "gunicorn", "tests.cache.serverapps:create_wsgi_app()",
                "--bind", f"{HOST}:{port}", "--workers", "1", "--worker-class", "gthread",
                "--threads", "8", "--log-level", "warning", "--graceful-timeout", "2"]
    return argv


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory"
    request.getfixturevalue("redis_client")  # a flushed db, flushed again afterwards
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture(params=["asgi", "wsgi"])
def server(request: pytest.FixtureRequest, store: str, tmp_path: Path) -> Iterator[Server]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(RLMW_CACHE_STORE=store, PYTHONUNBUFFERED="1")
    with serve_command(request.param, _argv(request.param), cwd=ROOT, env=env,
                       log_dir=tmp_path) as running:
        yield running


def test_a_get_sent_as_the_post_answer_arrives_sees_the_change(server: Server) -> None:
    """Read your own writes: the GET goes out on another connection the moment the POST's
    answer is in, every round, and never gets the entry from before the POST."""
    stale = []
    with httpx.Client(base_url=server.base) as writer, \
            httpx.Client(base_url=server.base) as reader:
        for _ in range(ROUNDS):
            before = reader.get("/item")
            assert reader.get("/item").headers["cache-status"].startswith(
                "ratelimit-mw; hit"), before.headers  # stored: there is something to drop
            version = writer.post("/item").text.removeprefix("now ")
            after = reader.get("/item").text
            if after != f"version {version}":
                stale.append((version, after))
    assert stale == []
