"""``Rule(messages=)`` under real servers: uvicorn (wsproto) and hypercorn on 127.0.0.1.

30 messages sent at once against ``5/second``: the app receives at most 5, the client
sees the close code 1008, and the app's ``receive()`` saw a disconnect with 1008. The
handshake is checked on a private Redis, watched with MONITOR: one round trip for the
connection, none per message.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.matrix import SERVERS, websocket_echo
from tests.integration.realservers import ROOT, Server, serve_command
from tests.redis_monitor import Monitor, client_commands
from tests.redis_server import PrivateRedis

_TROUBLE = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b")
_ENDED = re.compile(r"wsapps received=(\d+) code=(\d+)")


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    yield redis
    redis.stop()


def _endings(served: Server, count: int) -> list[tuple[int, int]]:
    """The app's ``received``/``code`` lines, once *count* connections have ended."""
    deadline = time.monotonic() + 5
    while (len(found := _ENDED.findall(served.output())) < count
           and time.monotonic() < deadline):
        time.sleep(0.05)
    return [(int(received), int(code)) for received, code in found]


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn"])
def test_thirty_messages_against_five_per_second(kind: str, server: PrivateRedis,
                                                  tmp_path: Path) -> None:
    env = {**os.environ, "RLMW_TEST_STORAGE": server.url, "PYTHONPATH": str(ROOT),
           "PYTHONUNBUFFERED": "1"}
    env.pop("REDIS_URL", None)
    with serve_command(kind, lambda port: SERVERS[kind]("tests.integration.wsapps:app",
                                                        port),
                       cwd=ROOT, env=env, log_dir=tmp_path) as served:
        # Warm up: the limiter's connection and script are loaded by a first session.
        warm = websocket_echo(served.port, "127.0.0.1", "bye")
        assert (warm.status, warm.received, warm.close_code) == (101, ["bye"], 1000)
        monitor = Monitor(server.port, tmp_path / "monitor.txt")
        flood = websocket_echo(served.port, "127.0.0.1", "x", count=30)
        commands = client_commands(monitor.stop())
        assert flood.status == 101
        assert flood.close_code == 1008
        assert len(flood.received) <= 5
        assert commands == ["EVALSHA"]  # the handshake's check; the 30 messages: none
        # What the app's receive() gave it: at most 5 texts, then a disconnect with 1008.
        assert _endings(served, 2) == [(1, 1000), (len(flood.received), 1008)]
        output = served.output()
    assert not _TROUBLE.search(output), output
