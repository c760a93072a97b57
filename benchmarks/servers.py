"""Requests/s and p99 under real servers, driven by wrk over loopback.

ASGI variants run under uvicorn (one process, its default event loop and HTTP parser:
uvloop and httptools when installed), WSGI variants under gunicorn (one sync worker: one
process serves requests, as with uvicorn; memory counters stay in that one process).
All servers of one kind are started together, each on its own free 127.0.0.1 port, and
wrk (``-t1 -c32``) visits them in turn, round after round, the order rotating, so slow
drift of the machine is shared. Every server is stopped by its PID (its process group) in
a ``finally`` block.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .apps import EXPECTED_HEADERS, ITEM_PATH
from .inprocess import Config, configs, storage_url
from .redis_server import free_port
from .stats import summary

__all__ = ["parse_wrk", "run", "wrk_version"]

Log = Callable[[str], None]
REPO = Path(__file__).resolve().parent.parent
CONNECTIONS = 32
THREADS = 1
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_binary() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not on PATH: apt-get install -y wrk (benchmarks/run does)")
    return binary


def wrk_version() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        return "missing"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                         check=False)
    first = (out.stdout or out.stderr).splitlines()[0]
    return first.split(" Copyright")[0].strip()


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms), request count and errors from wrk's report."""
    result: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk's output:\n{output}")
    result["rps"] = float(rps.group(1))
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", output, re.M)
        result[f"p{pct}_ms"] = _ms(match.group(1)) if match else None
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    result["requests"] = int(total.group(1)) if total else 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        result["non_2xx"] = int(non2xx.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    if errors:
        result["socket_errors"] = sum(int(g) for g in errors.groups())
    return result


def run_wrk(port: int, seconds: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}{ITEM_PATH}"
    command = [wrk_binary(), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s",
               "--timeout", "5s", "--latency", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 20,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


@dataclass
class Server:
    kind: str
    config: Config
    port: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def stop(self) -> None:
        """SIGTERM to the server's own process group (gunicorn's worker too), then KILL."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
            except ProcessLookupError:
                pass
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-4000:]


def _command(kind: str, port: int) -> list[str]:
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.serve:asgi",
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                "--log-level", "warning", "--lifespan", "on"]
    return [sys.executable, "-m", "gunicorn", "benchmarks.serve:wsgi()",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "sync",
            "--log-level", "warning", "--error-logfile", "-", "--graceful-timeout", "2"]


def start(kind: str, config: Config, storage: str, limit: str = "") -> Server:
    port = free_port()
    env = {**os.environ, "BENCH_VARIANT": config.variant, "BENCH_STORAGE": storage,
           "BENCH_LIMIT": limit,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Server.stop
    process = subprocess.Popen(_command(kind, port), cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    return Server(kind, config, port, process, log)


def wait_ready(server: Server, timeout: float = 30.0) -> None:
    """Until the server answers 200 with the variant's quota headers; else an error."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.kind} for {server.config.name} exited:\n"
                               + server.output())
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", ITEM_PATH)
            response = conn.getresponse()
            response.read()
            headers = {k.lower() for k, _ in response.getheaders()}
            conn.close()
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.kind} for {server.config.name} did not answer "
                                   f"in {timeout:.0f} s:\n" + server.output()) from None
            time.sleep(0.1)
            continue
        missing = [h for h in EXPECTED_HEADERS[server.config.variant] if h not in headers]
        if response.status != 200 or missing:
            raise RuntimeError(f"{server.config.name} under {server.kind}: status "
                               f"{response.status}, missing headers {missing}")
        return


def _measure_group(kind: str, group: list[Config], redis_url: Callable[[int], str], *,
                   rounds: int, seconds: int, warmup: int, log: Log) -> list[dict[str, Any]]:
    servers: list[Server] = []
    try:
        for config in group:
            servers.append(start(kind, config, storage_url(config, redis_url)))
        for server in servers:
            wait_ready(server)
        for server in servers:
            run_wrk(server.port, warmup)
        runs: dict[Config, list[dict[str, Any]]] = {c: [] for c in group}
        for r in range(rounds):
            shift = r % len(servers)
            for server in servers[shift:] + servers[:shift]:
                runs[server.config].append(run_wrk(server.port, seconds))
            log(f"  {kind} round {r + 1}/{rounds} done")
    finally:
        for server in servers:
            server.stop()
    bare = runs[group[0]]
    rows = []
    for config in group:
        mine = runs[config]
        rows.append({
            "server": kind,
            "interface": config.interface,
            "variant": config.variant,
            "storage": config.storage,
            "rps": summary([m["rps"] for m in mine]),
            "ratio_to_bare": summary([m["rps"] / b["rps"]
                                      for m, b in zip(mine, bare, strict=True)]),
            "p50_ms": summary([m["p50_ms"] for m in mine]),
            "p99_ms": summary([m["p99_ms"] for m in mine]),
            "requests": sum(m["requests"] for m in mine),
            "non_2xx": sum(m["non_2xx"] for m in mine),
            "socket_errors": sum(m["socket_errors"] for m in mine),
        })
    return rows


def run(redis_url: Callable[[int], str], *, rounds: int, seconds: int, warmup: int,
        log: Log = print) -> dict[str, Any]:
    """The section ``servers`` of results.json."""
    rows: list[dict[str, Any]] = []
    all_configs = configs()
    for kind, interface in (("uvicorn", "asgi"), ("gunicorn", "wsgi")):
        group = [c for c in all_configs if c.interface == interface]  # bare first
        rows += _measure_group(kind, group, redis_url, rounds=rounds, seconds=seconds,
                               warmup=warmup, log=log)
    return {
        "rounds": rounds,
        "seconds": seconds,
        "wrk": f"wrk -t{THREADS} -c{CONNECTIONS} -d{seconds}s --latency",
        "uvicorn": "1 process (no --workers), --loop auto --http auto",
        "gunicorn": "--workers 1 --worker-class sync",
        "rows": rows,
    }
