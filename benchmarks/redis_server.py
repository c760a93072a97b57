"""A private ``redis-server`` for the benchmarks: free loopback port, no persistence.

Private so that nothing else's traffic reaches ``INFO commandstats`` or the timings, and
so that the benchmark may flush it. Stopped by its PID.
"""

from __future__ import annotations

import shutil
import subprocess

# One implementation of the private server (start, wait, stop by PID) for tests and
# benchmarks alike.
from tests.redis_server import PrivateRedis as _TestRedis
from tests.redis_server import free_port

__all__ = ["PrivateRedis", "free_port", "redis_version"]


def redis_version() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        return "missing"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                         check=False).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


class PrivateRedis(_TestRedis):
    """The tests' private server, with a URL per db: ``with PrivateRedis() as s: s.url(3)``."""

    def url(self, db: int = 0) -> str:  # type: ignore[override]
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> PrivateRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
