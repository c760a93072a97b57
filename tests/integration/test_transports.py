"""The storage URL schemes against real servers: redis+unix:// and rediss:// (TLS)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ratelimit_mw import AsyncRateLimiter, RateLimiter
from tests.redis_server import PrivateRedis, free_port


@pytest.fixture
def unix_redis() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="rlmw-sock-")
    socket_path = f"{folder}/redis.sock"
    server = PrivateRedis("--unixsocket", socket_path, "--unixsocketperm", "700")
    yield socket_path
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tls_redis() -> Iterator[tuple[int, str]]:
    folder = Path(tempfile.mkdtemp(prefix="rlmw-tls-"))
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    tls_port = free_port()
    server = PrivateRedis("--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                          "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                          "--tls-auth-clients", "no")
    yield tls_port, str(cert)
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def test_unix_socket_sync(unix_redis: str) -> None:
    limiter = RateLimiter(f"redis+unix://{unix_redis}")
    assert [limiter.hit("2/minute", "u").allowed for _ in range(3)] == [True, True, False]
    limiter.close()


async def test_unix_socket_async(unix_redis: str) -> None:
    limiter = AsyncRateLimiter(f"redis+unix://{unix_redis}")
    assert [(await limiter.hit("1/minute", "u")).allowed for _ in range(2)] == [True, False]
    await limiter.aclose()


def test_tls_sync(tls_redis: tuple[int, str]) -> None:
    port, cert = tls_redis
    limiter = RateLimiter(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}")
    assert [limiter.hit("2/minute", "t").allowed for _ in range(3)] == [True, True, False]
    assert limiter.ping() is True
    limiter.close()


async def test_tls_async(tls_redis: tuple[int, str]) -> None:
    port, cert = tls_redis
    limiter = AsyncRateLimiter(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}")
    assert [(await limiter.hit("1/minute", "t")).allowed for _ in range(2)] == [True, False]
    await limiter.aclose()
