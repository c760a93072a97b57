"""``Rule(concurrency=N)`` under real servers on 127.0.0.1, on a private Redis.

test_kinds.py checks the leases in process; here the servers decide when a response
ends, so what is tested is that they release the slot when they should:

* uvicorn, one worker: 6 concurrent 1.5 s requests against 2 slots are 2 x 200 and
  4 x 429 (``Retry-After: 1``, the concurrency policy), the app never serves more than 2
  at once, and both slots are free afterwards;
* uvicorn: a client that closes its connection mid-stream frees the stream's slot
  within 2 s (Starlette hears ``http.disconnect``), not when the 10 s stream would end;
* gunicorn, one sync worker: a worker SIGKILLed mid-request cannot release its slot;
  the arbiter's new worker refuses until the lease times out (``concurrency_timeout=2``),
  then admits;
* gunicorn, three sync workers: the slots are shared between processes (each sync
  worker serves one request at a time, so 4 refusals mean the count was shared).

Each server's process group is stopped when its test ends; every HTTP call has a
timeout. About 15 s for the file on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from tests.integration.leaseapps import SLOW_STARTED
from tests.integration.realservers import HOST, ROOT, Server, serve_command
from tests.redis_server import PrivateRedis

SLOW = 1.5  # seconds a /slow request takes in the bursts
POLICY = '"/slow-concurrency";q=2;qu="concurrent-requests"'
#: The server releases a slot once the response is sent (ASGI: after the last body
#: message; WSGI: in close()), a moment after the client has read it.
SETTLE = 0.2


def _uvicorn(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "tests.integration.leaseapps:create_asgi_app",
            "--factory", "--host", HOST, "--port", str(port), "--log-level", "warning",
            "--no-access-log", "--timeout-graceful-shutdown", "2"]


def _gunicorn(workers: int) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable, "-m", "gunicorn", "tests.integration.leaseapps:create_wsgi_app()",
        "--bind", f"{HOST}:{port}", "--workers", str(workers), "--worker-class", "sync",
        "--timeout", "60", "--log-level", "warning", "--graceful-timeout", "2"]


@contextlib.contextmanager
def running(argv: Callable[[int], list[str]], redis: PrivateRedis, log_dir: Path,
            workers: int = 1, **env: str) -> Iterator[Server]:
    """*argv* serving the lease apps on *redis* until the block ends, every worker
    ready; no traceback in its output by then."""
    environ = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    environ.update(RLMW_TEST_STORAGE=redis.url, PYTHONUNBUFFERED="1", **env)
    with serve_command("server", argv, cwd=ROOT, env=environ, log_dir=log_dir) as server:
        _wait_for(lambda: len(server.ready_pids()) >= workers, server, 20)
        yield server
        assert "Traceback" not in server.output(), server.output()


async def burst(base: str, count: int, seconds: float) -> list[httpx.Response]:
    """*count* concurrent GETs of /slow?s=*seconds*, each on its own connection."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=15, limits=limits) as client:
        return await asyncio.gather(*(client.get("/slow", params={"s": seconds})
                                      for _ in range(count)))


async def six_against_two_slots(server: Server) -> None:
    responses = await burst(server.base, 6, SLOW)
    context = f"{[r.status_code for r in responses]}; server output:\n{server.output()}"
    assert Counter(r.status_code for r in responses) == {200: 2, 429: 4}, context
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.headers["retry-after"] == "1", context
        assert refused.headers["ratelimit-policy"] == POLICY, context
    await asyncio.sleep(SETTLE)
    again = await burst(server.base, 2, 0.5)
    assert [r.status_code for r in again] == [200, 200], server.output()


async def test_uvicorn_serves_two_at_once(private_redis: PrivateRedis, tmp_path: Path) -> None:
    with running(_uvicorn, private_redis, tmp_path) as server:
        await six_against_two_slots(server)
        async with httpx.AsyncClient(base_url=server.base, timeout=5) as client:
            assert (await client.get("/peak")).text == "2"  # /slow requests at once


def test_uvicorn_client_disconnect_frees_the_slot(private_redis: PrivateRedis,
                                                  tmp_path: Path) -> None:
    with running(_uvicorn, private_redis, tmp_path) as server, \
            httpx.Client(base_url=server.base, timeout=5) as client:
        # A 10 s stream: read its head and first chunk, then hang up.
        with socket.create_connection((HOST, server.port), timeout=5) as stream:
            stream.sendall(b"GET /stream?n=100 HTTP/1.1\r\nHost: test\r\n\r\n")
            received = b""
            while b"chunk" not in received:
                data = stream.recv(4096)
                assert data, received
                received += data
            assert received.startswith(b"HTTP/1.1 200"), received
            assert client.get("/stream", params={"n": 1}).status_code == 429
        closed = time.monotonic()
        statuses = []
        while time.monotonic() < closed + 2:
            statuses.append(client.get("/stream", params={"n": 1}).status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.1)
        assert statuses[-1] == 200, (statuses, server.output())


def test_gunicorn_killed_worker_holds_its_slot_until_the_timeout(
        private_redis: PrivateRedis, tmp_path: Path) -> None:
    with running(_gunicorn(1), private_redis, tmp_path, RLMW_TEST_CONCURRENCY="1",
                 RLMW_TEST_LEASE_TIMEOUT="2") as server, \
            httpx.Client(base_url=server.base, timeout=5) as client:
        pid = int(client.get("/pid").text)
        started = time.monotonic()
        long = threading.Thread(target=_get_ignoring_errors,
                                args=(f"{server.base}/slow?s=30",), daemon=True)
        long.start()
        _wait_for(lambda: f"{SLOW_STARTED}{pid}" in server.output(), server, 5)
        os.kill(pid, signal.SIGKILL)  # mid-request: its lease is never released
        seen: list[tuple[float, int]] = []
        while not seen or seen[-1][1] != 200:
            assert time.monotonic() < started + 10, (seen, server.output())
            status = client.get("/slow", params={"s": 0}).status_code
            seen.append((time.monotonic() - started, status))
            time.sleep(0.1)
        long.join(5)
        assert int(client.get("/pid").text) != pid
    context = f"{seen}; server output:\n{server.output()}"
    assert {status for _, status in seen} == {200, 429}, context
    assert 1.5 <= seen[-1][0] <= 6, context


async def test_gunicorn_workers_share_the_slots(private_redis: PrivateRedis,
                                                tmp_path: Path) -> None:
    with running(_gunicorn(3), private_redis, tmp_path, workers=3) as server:
        await six_against_two_slots(server)


def _get_ignoring_errors(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):  # expected: its worker is killed
        httpx.get(url, timeout=40)


def _wait_for(condition: Callable[[], bool], server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)

