"""Find or start a real Redis for the tests: $REDIS_URL, else 127.0.0.1:6379, else a private
``redis-server`` from PATH. Never skips: no Redis is a failure, said loudly."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

#: The db number the tests own on a shared Redis; they FLUSHDB it, never FLUSHALL.
TEST_DB = 13


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A ``redis-server`` on a free loopback port, no persistence, stopped by PID."""

    def __init__(self, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH: install Redis 7 to run the tests")
        self.binary = binary
        self.args = args
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="rlmw-redis-")
        self.start()

    def start(self) -> None:
        """(Re)start the server on its port and wait until it answers."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """Stop the server the hard way (SIGKILL), keeping its port for :meth:`start`."""
        self.resume()
        self.process.kill()
        self.process.wait(5)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def find_redis() -> tuple[str, PrivateRedis | None]:
    """The base URL of a Redis the tests may use (db :data:`TEST_DB`), and the private
    server to stop afterwards, if one had to be started."""
    url = os.environ.get("REDIS_URL")
    if url:
        parts = urlsplit(url)
        if not _answers(parts.hostname or "127.0.0.1", parts.port or 6379):
            raise RuntimeError(f"REDIS_URL={url} does not answer PING")
        return urlunsplit(parts._replace(path=f"/{TEST_DB}")), None
    if _answers("127.0.0.1", 6379):
        return f"redis://127.0.0.1:6379/{TEST_DB}", None
    server = PrivateRedis()
    return f"redis://127.0.0.1:{server.port}/{TEST_DB}", server
