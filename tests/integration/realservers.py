"""Run the apps of :mod:`tests.integration.serverapps` under real servers, on 127.0.0.1.

``serve(kind, workers, env, log_dir)`` starts ``uvicorn --workers N`` (``kind="asgi"``)
or ``gunicorn -w N`` with sync workers (``kind="wsgi"``) on a free loopback port, waits
until every worker has built its app and ``/health`` answers (a bounded wait that fails
loudly with the server's output), and always stops the whole process group (SIGTERM,
then SIGKILL) when the block ends. The server's stdout and stderr go to a log file, not
a pipe, so a chatty server can never block on a full pipe.

``serve_command(name, argv, ...)`` does the same for any command line that serves HTTP on
the port it is given (the examples under uvicorn, hypercorn, granian, gunicorn, waitress).

Also: :class:`Sample` (one request's timing and outcome) and :func:`p95`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.serverapps import READY
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
#: How long a server may take to have every worker ready.
START_TIMEOUT = 20.0
#: How long a server may take to exit after SIGTERM before its group is SIGKILLed.
STOP_TIMEOUT = 10.0
_PORT_CLASH = ("address already in use", "connection in use")


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent and answered (monotonic seconds), its status (None:
    a transport error, described in ``error``) and the identity it was sent as."""

    sent: float
    done: float
    status: int | None
    error: str = ""
    label: str = ""
    pid: str = ""

    @property
    def latency(self) -> float:
        return self.done - self.sent


def p95(values: Sequence[float]) -> float:
    """The 95th percentile (nearest rank) of a non-empty sequence."""
    if not values:
        raise ValueError("p95 of nothing")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Server:
    kind: str
    workers: int
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:] or "(no output)"
        except OSError:
            return "(no log)"

    def ready_pids(self) -> set[str]:
        # Not line by line: workers write to one file at once, so two announcements
        # can share a line ("...pid=41serverapps ready pid=42").
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return set()
        return set(re.findall(re.escape(READY) + r"(\d+)", text))


def _argv(kind: str, workers: int, port: int) -> list[str]:
    if kind == "asgi":
        return [sys.executable, "-m", "uvicorn", "tests.integration.serverapps:create_asgi_app",
                "--factory", "--host", HOST, "--port", str(port), "--workers", str(workers),
                "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "2"]
    if kind == "wsgi":
        return [sys.executable, "-m", "gunicorn", "tests.integration.serverapps:create_wsgi_app()",
                "--bind", f"{HOST}:{port}", "--workers", str(workers), "--worker-class", "sync",
                "--log-level", "warning", "--error-logfile", "-", "--graceful-timeout", "2"]
    raise ValueError(f"kind={kind!r}: asgi or wsgi")


def server_env(storage: str, limit: str, *, policy: str = "memory",
               strategy: str = "fixed-window", name: str = "limited") -> dict[str, str]:
    """The environment for a server process: ours, minus anything pointing at a shared
    Redis, plus the app's configuration."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(RLMW_TEST_STORAGE=storage, RLMW_TEST_LIMIT=limit, RLMW_TEST_POLICY=policy,
               RLMW_TEST_STRATEGY=strategy, RLMW_TEST_NAME=name, PYTHONUNBUFFERED="1")
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, wait, then SIGKILL whatever is left of it."""
    group = process.pid  # start_new_session=True: the server leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)  # stragglers (workers) and a hung master
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)


def _wait_ready(server: Server) -> str | None:
    """``None`` once every worker is ready and /health answers 200; "clash" if the server
    exited because its port was taken; fails the test on any other exit or after
    :data:`START_TIMEOUT`."""
    return _wait_answering(server, "/health", START_TIMEOUT,
                           ready=lambda: len(server.ready_pids()) >= server.workers)


@contextlib.contextmanager
def serve(kind: str, workers: int, env: dict[str, str], log_dir: Path) -> Iterator[Server]:
    """A running server of *kind* with *workers* processes; stopped when the block ends."""
    for attempt in range(3):  # a free port can be taken before the server binds it
        port = free_port()
        log = log_dir / f"{kind}-{port}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(_argv(kind, workers, port), cwd=ROOT, env=env,
                                       stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        server = Server(kind, workers, port, process, log)
        try:
            outcome = _wait_ready(server)
            if outcome == "clash" and attempt < 2:
                continue
            if outcome == "clash":
                pytest.fail(f"no free port for the {kind} server after 3 tries:\n"
                            f"{server.output()}")
            yield server
            return
        finally:
            _stop(process)


# --- any command that serves HTTP on a port: the examples under several servers ---------


def _wait_answering(server: Server, path: str, timeout: float,
                    ready: Callable[[], bool] = lambda: True) -> str | None:
    """``None`` once *ready()* holds and *path* answers 200, "clash" if the server exited
    because its port was taken; fails the test on any other exit or after *timeout*
    seconds, with the server's output."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            output = server.output()
            if any(text in output.lower() for text in _PORT_CLASH):
                return "clash"
            pytest.fail(f"{server.kind} exited with {server.process.returncode} before "
                        f"{path} answered; its output:\n{output}")
        if ready():
            try:
                if httpx.get(f"{server.base}{path}", timeout=1).status_code == 200:
                    return None
            except httpx.TransportError:
                pass
        if time.monotonic() > deadline:
            pytest.fail(f"{server.kind} on port {server.port}: {path} did not answer 200 "
                        f"within {timeout:.0f}s ({len(server.ready_pids())} of "
                        f"{server.workers} workers announced ready); its output:\n"
                        f"{server.output()}")
        time.sleep(0.1)


@contextlib.contextmanager
def serve_command(name: str, argv: Callable[[int], Sequence[str]], *, cwd: Path,
                  env: Mapping[str, str], log_dir: Path, ready_path: str = "/health",
                  timeout: float = START_TIMEOUT) -> Iterator[Server]:
    """``argv(port)`` serving on a free loopback port until the block ends.

    For servers that print no :data:`READY` line (the examples under uvicorn, hypercorn,
    granian, gunicorn, waitress): ready once GET *ready_path* answers 200, within
    *timeout* seconds, else the test fails with the server's output. The command runs in
    a process group of its own, stopped as :func:`serve` stops its servers; its output
    goes to ``log_dir/<name>-<port>.log``. A port taken before the server bound it is
    retried on another (3 tries).
    """
    for attempt in range(3):
        port = free_port()
        log = log_dir / f"{name}-{port}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(list(argv(port)), cwd=cwd, env=dict(env),
                                       stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        server = Server(name, 1, port, process, log)
        try:
            outcome = _wait_answering(server, ready_path, timeout)
            if outcome == "clash" and attempt < 2:
                continue
            if outcome == "clash":
                pytest.fail(f"no free port for {name} after 3 tries:\n{server.output()}")
            yield server
            return
        finally:
            _stop(process)
