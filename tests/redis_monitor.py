"""Redis MONITOR as a test helper: what clients send to a private server, in order.

MONITOR prints every command a client sends (``[db 127.0.0.1:port]``) and, tagged
``[db lua]``, the commands a script runs.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


class Monitor:
    """``redis-cli monitor`` on *port*, written to *path*; `stop` returns the lines."""

    def __init__(self, port: int, path: Path) -> None:
        self.path = path
        self._file = path.open("w")
        self.process = subprocess.Popen(["redis-cli", "-p", str(port), "monitor"],
                                        stdout=self._file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while "OK" not in path.read_text():
            assert time.monotonic() < deadline, "MONITOR did not start"
            time.sleep(0.02)

    def stop(self) -> list[str]:
        time.sleep(0.2)  # let the last lines arrive
        self.process.terminate()
        self.process.wait(5)
        self._file.close()
        return [line for line in self.path.read_text().splitlines() if line != "OK"]


def client_commands(lines: list[str]) -> list[str]:
    """The commands clients sent (not those run inside scripts), upper-cased names."""
    out = []
    for line in lines:
        where, _, rest = line.partition("] ")
        if " lua" in where:
            continue
        out.append(rest.split(" ", 1)[0].strip('"').upper())
    return out
