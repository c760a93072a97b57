"""The cache under real servers on 127.0.0.1: uvicorn (ASGI) and gunicorn with threads
(WSGI), on the memory store and a real Redis, with clients on their own connections."""

from __future__ import annotations

import os
import sys
import time
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


def _env(store: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(RLMW_CACHE_STORE=store, PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture(params=["asgi", "wsgi"])
def server(request: pytest.FixtureRequest, store: str, tmp_path: Path) -> Iterator[Server]:
    with serve_command(request.param, _argv(request.param), cwd=ROOT, env=_env(store),
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


OUTAGE = 10.0
#: Requests this close to a boundary (the end of the stale-if-error window, the end of
#: the outage) may fall on either side of it: the server's clock decides, not ours.
MARGIN = 0.5


@pytest.mark.parametrize("window", [60, 5])
def test_stale_if_error_under_uvicorn(store: str, tmp_path: Path, window: int) -> None:
    """The app answers 500 for 10 s. Every request in that time, while the entry is within
    its stale-if-error window, gets the stored 200; none after the window (the 500
    goes through), and once the app is back, its new answers."""
    env = _env(store, RLMW_CACHE_SIE=str(window))
    with serve_command("uvicorn", _argv("asgi"), cwd=ROOT, env=env,
                       log_dir=tmp_path) as running, \
            httpx.Client(base_url=running.base) as c:
        stored = c.get("/flaky")
        assert stored.text == "up 1"
        stored_at = time.monotonic()
        assert c.post("/down", params={"seconds": OUTAGE}).status_code == 200
        outage_start = time.monotonic()
        samples = []
        while time.monotonic() < outage_start + OUTAGE + 2:
            sent = time.monotonic()
            answer = c.get("/flaky")
            samples.append((sent - stored_at, sent - outage_start, answer))
            time.sleep(0.1)
    stale_until = 1 + window  # max-age=1, then the window
    for since_stored, since_outage, answer in samples:
        during_outage = since_outage < OUTAGE - MARGIN
        if during_outage and since_stored < stale_until - MARGIN:
            assert (answer.status_code, answer.text) == (200, "up 1"), since_stored
        elif during_outage and since_stored > stale_until + MARGIN:
            assert (answer.status_code, answer.text) == (500, "down"), since_stored
        elif since_outage > OUTAGE + MARGIN:
            assert answer.status_code == 200
            assert answer.text != "up 1"  # the app's new answer, never the stale one
        if answer.text == "up 1" and since_stored > 1 + MARGIN:
            assert "detail=stale-if-error" in answer.headers["cache-status"]
            assert since_stored < stale_until + MARGIN  # never after the window
    stale = [s for s in samples if s[2].text == "up 1" and s[0] > 1 + MARGIN]
    assert len(stale) > 10, "too few requests answered stale to show anything"
    errors = [s for s in samples if s[2].status_code == 500]
    assert (len(errors) > 10) is (window < OUTAGE)
