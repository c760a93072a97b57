"""Real Redis Cluster and Sentinel topologies for the tests, on 127.0.0.1 only.

:class:`PrivateCluster` starts three cluster-enabled masters and joins them with
``redis-cli --cluster create``; :class:`PrivateSentinel` starts a master, one replica and
one sentinel. Both use free loopback ports, no persistence and a private temp dir, wait
for readiness with a deadline (a clear ``RuntimeError``, never a hang) and stop every
process by PID. Never skips: a missing ``redis-server``/``redis-cli`` is a failure.

Fixtures (import them into a test module or a conftest to use them):

* ``redis_cluster``: session-scoped, shared; tests use keys of their own (or call
  :meth:`PrivateCluster.flushall`) and must not kill its nodes. A test that kills a node
  starts a :class:`PrivateCluster` of its own.
* ``redis_sentinel``: function-scoped; see the fixture for why.

URL forms ``limits`` accepts (``limits/_storage_scheme.py`` parses the netloc as a
comma-separated ``host:port`` list, each with an explicit port):

* ``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`` (sync) and
  ``async+redis+cluster://...`` (async, pass ``implementation="redispy"``; the default
  is coredis);
* ``redis+sentinel://127.0.0.1:<sentinel port>/mymaster`` and ``async+redis+sentinel://...``.
  Sentinel storages read from a *replica* for read-only operations by default
  (``use_replicas=True``): replication is asynchronous, so a read right after a write
  may be stale. Pass ``use_replicas=False`` where a test reads what it just wrote.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_server import _answers

HOST = "127.0.0.1"
#: How long a topology may take to come up (or a failover to complete) before failing.
START_TIMEOUT = 30.0
#: How long a process may take to exit after SIGTERM before it is SIGKILLed.
STOP_TIMEOUT = 5.0


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not on PATH: install Redis 7 to run the tests")
    return path


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all bound at once, so no duplicates)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


class SpawnError(RuntimeError):
    """A server did not come up; ``port_clash`` if it exited because a port was taken
    (a free port can be grabbed by someone else before the server binds it)."""

    def __init__(self, message: str, port_clash: bool) -> None:
        super().__init__(message)
        self.port_clash = port_clash


def _spawn(binary: str, args: list[str], port: int, log: Path,
           timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start ``binary args`` (which must listen on ``port``) and wait until it PONGs."""
    process = subprocess.Popen(
        [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while not _answers(HOST, port):
        if process.poll() is not None or time.monotonic() > deadline:
            exited = process.poll() is not None
            _stop_process(process)
            tail = _log_tail(log)
            raise SpawnError(
                f"{Path(binary).name} {' '.join(args)} did not answer PING on port {port} "
                f"within {timeout:.0f}s (exit code {process.returncode}); log:\n"
                f"{tail}",
                port_clash=exited and "already in use" in tail,
            )
        time.sleep(0.05)
    return process


def command(port: int, *args: Any, timeout: float = 5.0) -> Any:
    """Run one command on the Redis (or sentinel) at 127.0.0.1:``port``; str replies."""
    client = redis.Redis(host=HOST, port=port, socket_timeout=timeout,
                         socket_connect_timeout=timeout, decode_responses=True)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def _info(port: int, section: str) -> dict[str, str]:
    """``INFO section`` (or ``CLUSTER INFO`` for section "cluster-info") as a str dict."""
    args = ("CLUSTER", "INFO") if section == "cluster-info" else ("INFO", section)
    client = redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        raw = client.execute_command(*args, NEVER_DECODE=True)
    finally:
        client.close()
    if isinstance(raw, dict):  # redis-py parses INFO itself
        return {str(key): str(value) for key, value in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.1) -> None:
    """Poll ``predicate`` (errors count as "not yet") until true; ``RuntimeError`` after
    ``timeout`` seconds, naming ``what`` and the last error seen."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last!r})" if last else ""
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


class PrivateCluster:
    """A Redis Cluster of ``masters`` masters (no replicas) on free loopback ports.

    Each node gets an explicit cluster bus port (``cluster-port``, Redis >= 7): the
    default bus port is ``port + 10000``, which may be taken or exceed 65535 for a random
    ephemeral port.
    """

    def __init__(self, masters: int = 3, node_timeout_ms: int = 2000,
                 start_timeout: float = START_TIMEOUT) -> None:
        server, cli = _binary("redis-server"), _binary("redis-cli")
        self.dir = Path(tempfile.mkdtemp(prefix="rlmw-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        started = time.monotonic()
        try:
            for _ in range(masters):
                self._start_node(server, node_timeout_ms)
            addresses = [f"{HOST}:{port}" for port in self.ports]
            try:
                created = subprocess.run(
                    [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
                     "--cluster-yes"],
                    capture_output=True, text=True, timeout=start_timeout, check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(
                    f"redis-cli --cluster create did not finish in {start_timeout:.0f}s"
                ) from exc
            if created.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed ({created.returncode}):\n"
                    f"{created.stdout}\n{created.stderr}"
                )
            remaining = max(1.0, start_timeout - (time.monotonic() - started))
            wait_until(self._healthy, remaining,
                       f"cluster_state:ok on every node of {self.url}")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _start_node(self, server: str, node_timeout_ms: int) -> None:
        for attempt in range(3):  # a free port may be grabbed before the server binds it
            port, bus_port = free_ports(2)
            log = self.dir / f"node-{port}.log"
            args = [
                "--port", str(port), "--bind", HOST, "--dir", str(self.dir),
                "--logfile", str(log), "--save", "", "--appendonly", "no",
                "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-announce-ip", HOST,
            ]
            try:
                self.processes[port] = _spawn(server, args, port, log)
            except SpawnError as exc:
                if not exc.port_clash or attempt == 2:
                    raise
            else:
                return

    def _healthy(self) -> bool:
        expected = str(len(self.processes))
        for port in self.ports:
            info = _info(port, "cluster-info")
            if (info.get("cluster_state") != "ok"
                    or info.get("cluster_slots_ok") != "16384"
                    or info.get("cluster_known_nodes") != expected):
                return False
        return True

    @property
    def ports(self) -> list[int]:
        """Ports of the running nodes (a killed node is dropped)."""
        return list(self.processes)

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each running node: ``redis.cluster.ClusterNode(*node)``."""
        return [(HOST, port) for port in self.ports]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...`` for ``limits`` (prefix it
        with ``async+`` for ``limits.aio``)."""
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.nodes)

    def execute(self, *args: Any, port: int | None = None) -> Any:
        """Run a command on one node (the first by default): not routed by slot."""
        return command(self.ports[0] if port is None else port, *args)

    def cluster_state(self, port: int) -> str:
        return _info(port, "cluster-info").get("cluster_state", "")

    def flushall(self) -> None:
        """Empty every node (FLUSHALL is per node in a cluster)."""
        for port in self.ports:
            command(port, "FLUSHALL")

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would. With no replicas and the default
        ``cluster-require-full-coverage yes``, the survivors report ``cluster_state:fail``
        once ``cluster-node-timeout`` has passed."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(Exception):
                _stop_process(process)
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrivateSentinel:
    """A master, one replica (``replicaof``) and one sentinel monitoring ``mymaster``
    with quorum 1, all on free loopback ports."""

    def __init__(self, service: str = "mymaster", down_after_ms: int = 1000,
                 failover_timeout_ms: int = 5000,
                 start_timeout: float = START_TIMEOUT) -> None:
        server = _binary("redis-server")
        self.service = service
        self.dir = Path(tempfile.mkdtemp(prefix="rlmw-sentinel-"))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        started = time.monotonic()
        try:
            self._start("master", server, lambda _port: [])
            self._start("replica", server,
                        lambda _port: ["--replicaof", HOST, str(self.ports["master"])])
            self._start("sentinel", server, self._sentinel_args(
                down_after_ms, failover_timeout_ms))
            remaining = max(1.0, start_timeout - (time.monotonic() - started))
            wait_until(self._ready, remaining,
                       f"sentinel {self.sentinel_port} to see master {self.master_port} "
                       f"and replica {self.replica_port} (link up)")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _sentinel_args(self, down_after_ms: int,
                       failover_timeout_ms: int) -> Callable[[int], list[str]]:
        def args(port: int) -> list[str]:
            # Sentinel rewrites its config file, so it lives in the private dir.
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\n"
                f"bind {HOST}\n"
                f"dir {self.dir}\n"
                f"logfile {self.dir / f'sentinel-{port}.log'}\n"
                f"sentinel monitor {self.service} {HOST} {self.ports['master']} 1\n"
                f"sentinel down-after-milliseconds {self.service} {down_after_ms}\n"
                f"sentinel failover-timeout {self.service} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            return [str(conf), "--sentinel"]
        return args

    def _start(self, role: str, server: str, extra: Callable[[int], list[str]]) -> None:
        for attempt in range(3):  # a free port may be grabbed before the server binds it
            (port,) = free_ports(1)
            log = self.dir / f"{role}-{port}.log"
            if role == "sentinel":
                args = extra(port)
            else:
                args = ["--port", str(port), "--bind", HOST, "--dir", str(self.dir),
                        "--logfile", str(log), "--save", "", "--appendonly", "no",
                        # Replicas sync at once, not after the default 5s diskless delay.
                        "--repl-diskless-sync-delay", "0", *extra(port)]
            try:
                self.processes[role] = _spawn(server, args, port, log)
            except SpawnError as exc:
                if not exc.port_clash or attempt == 2:
                    raise
            else:
                self.ports[role] = port
                return

    def _ready(self) -> bool:
        if self.master_address() != (HOST, self.master_port):
            return False
        replicas = command(self.sentinel_port, "SENTINEL", "REPLICAS", self.service)
        seen = {int(entry["port"]) for entry in map(_pairs, replicas)
                if "s_down" not in entry["flags"] and entry.get("master-link-status") == "ok"}
        if self.replica_port not in seen:
            return False
        return _info(self.replica_port, "replication").get("master_link_status") == "up"

    @property
    def master_port(self) -> int:
        return self.ports["master"]

    @property
    def replica_port(self) -> int:
        return self.ports["replica"]

    @property
    def sentinel_port(self) -> int:
        return self.ports["sentinel"]

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:<sentinel port>/mymaster`` for ``limits`` (prefix
        it with ``async+`` for ``limits.aio``)."""
        return f"redis+sentinel://{HOST}:{self.sentinel_port}/{self.service}"

    def master_address(self) -> tuple[str, int]:
        """What the sentinel currently says the master is."""
        host, port = command(self.sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                             self.service)
        return str(host), int(port)

    def role(self, port: int) -> str:
        return _info(port, "replication").get("role", "")

    def failover(self, timeout: float = 45.0, settle: bool = True) -> None:
        """``SENTINEL FAILOVER`` and wait (``timeout`` seconds in all) until the
        sentinel names the old replica as master and that server says ``role:master``
        (about a second), then swap :attr:`master_port` and :attr:`replica_port`. With
        ``settle`` (the default), also wait until the old master has been turned into a
        replica of the new one with the link up: about 10s more.

        That last step is slow by design: Sentinel only reconfigures the old master
        after it has reported the wrong role for 8s (SENTINEL_PUBLISH_PERIOD * 4), and
        it polls a replica's INFO every 10s outside a failover. Until then the old master
        still accepts writes from clients connected to it; when it is converted,
        Sentinel kills their connections and they reconnect to the new master (whatever
        was written to the old master meanwhile is lost when it resyncs)."""
        old_master, new_master = self.master_port, self.replica_port
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.5, deadline - time.monotonic())

        wait_until(
            lambda: command(self.sentinel_port, "SENTINEL", "FAILOVER", self.service) == "OK",
            left(), "the sentinel to accept SENTINEL FAILOVER",  # -NOGOODSLAVE / -INPROG
            interval=0.25,
        )
        wait_until(lambda: self.master_address() == (HOST, new_master), left(),
                   f"the sentinel to name {new_master} as master")
        wait_until(lambda: self.role(new_master) == "master", left(),
                   f"{new_master} to report role:master")
        self.ports["master"], self.ports["replica"] = new_master, old_master
        self.processes["master"], self.processes["replica"] = (
            self.processes["replica"], self.processes["master"])
        if not settle:
            return

        def converted() -> bool:
            info = _info(old_master, "replication")
            return (info.get("role") == "slave"
                    and info.get("master_port") == str(new_master)
                    and info.get("master_link_status") == "up")

        wait_until(converted, left(),
                   f"the old master {old_master} to become a replica of {new_master}",
                   interval=0.25)

    def stop(self) -> None:
        # The sentinel first, so it does not fail over while the servers go down.
        for role in ("sentinel", "replica", "master"):
            process = self.processes.pop(role, None)
            if process is not None:
                with contextlib.suppress(Exception):
                    _stop_process(process)
        for process in self.processes.values():
            with contextlib.suppress(Exception):
                _stop_process(process)
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateSentinel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pairs(flat: Any) -> dict[str, str]:
    """A SENTINEL REPLICAS entry (a flat [k, v, k, v...] list, or a dict) as a dict."""
    if isinstance(flat, dict):
        return {str(k): str(v) for k, v in flat.items()}
    items = list(flat)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def close_limits_storage(storage: Any) -> None:
    """Close the redis-py clients of a sync ``limits`` Redis/Cluster/Sentinel storage."""
    clients = [getattr(storage, "storage", None), getattr(storage, "storage_slave", None)]
    sentinel = getattr(storage, "sentinel", None)
    clients += list(getattr(sentinel, "sentinels", []))
    for client in clients:
        if client is not None:
            client.close()


async def aclose_limits_storage(storage: Any) -> None:
    """Close the redis-py asyncio clients of a ``limits.aio`` storage made with
    ``implementation="redispy"`` (unclosed ones warn, and warnings are errors here)."""
    bridge = getattr(storage, "bridge", None)
    clients = [getattr(bridge, "storage", None), getattr(bridge, "storage_replica", None)]
    sentinel = getattr(bridge, "sentinel", None)
    clients += list(getattr(sentinel, "sentinels", []))
    for client in clients:
        if client is not None:
            await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateCluster]:
    """A 3-master Redis Cluster shared by the whole session (starting one takes ~2s).
    Use keys of your own; do not kill its nodes (start a PrivateCluster for that)."""
    cluster = PrivateCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_sentinel() -> Iterator[PrivateSentinel]:
    """A master + replica + sentinel of this test's own.

    Function scope: it starts in about a second, and a test may fail it over, which
    swaps the roles and leaves the sentinel in a post-failover state. A fresh topology
    per test keeps every test independent of the order they run in."""
    topology = PrivateSentinel()
    try:
        yield topology
    finally:
        topology.stop()
