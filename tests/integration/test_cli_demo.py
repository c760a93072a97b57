"""`ratelimit-mw demo` serves the middleware on memory storage over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.redis_server import free_port


def test_demo_serves_and_limits() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    command = Path(sys.executable).parent / "ratelimit-mw"
    process = subprocess.Popen([str(command), "demo", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "the demo exited"
                assert time.monotonic() < deadline, "the demo did not answer within 20 s"
                time.sleep(0.1)
        codes = [httpx.post(f"http://127.0.0.1:{port}/login", timeout=5).status_code
                 for _ in range(6)]
        assert codes == [200] * 5 + [429]
        item = httpx.get(f"http://127.0.0.1:{port}/items/7", timeout=5)
        assert item.headers["ratelimit-policy"] == '"/items/{id}";q=10;w=60'
        assert item.json()["rule"] == "/items/{id}"
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert "memory storage" in output
    assert f"http://127.0.0.1:{port}/login" in output
