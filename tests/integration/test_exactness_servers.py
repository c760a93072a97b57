"""Exact limits under real multi-process servers: 4 workers, 50 concurrent clients.

``uvicorn --workers 4`` (ASGI) and ``gunicorn -w 4`` (WSGI, sync workers) serve one
route limited to 100/hour, with one counter for every client. 50 concurrent clients
(asyncio tasks sharing an httpx client limited to 50 connections; no keep-alive, so each
request is a new connection and every worker gets its share) send 300 requests in all.
On a private Redis and on a Redis Cluster (the shared session fixture), for each
strategy: exactly 100 answers 200, 200 answer 429, no errors.

The servers use ``on_storage_error="deny"``: a storage failure under load (a socket
timeout, say) then shows as a 503 and fails the test by name, instead of the memory
fallback silently letting a few more requests through.

One server per kind x storage x strategy: 16 tests of about 2 s each (most of it
starting and stopping 4 workers), about 35 s in all on a 2-core machine, the cluster's
start included.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.integration.realservers import serve, server_env
from tests.redis_server import PrivateRedis
from tests.redis_topologies import PrivateCluster, redis_cluster

__all__ = ["redis_cluster"]

LIMIT = 100
REQUESTS = 300
CLIENTS = 50
WORKERS = 4


async def burst(base: str) -> tuple[Counter[int], Counter[str], list[str]]:
    """:data:`REQUESTS` GETs of /limited from :data:`CLIENTS` concurrent clients: the
    statuses, the worker pids that answered, the errors."""
    statuses: Counter[int] = Counter()
    pids: Counter[str] = Counter()
    errors: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def one_client(count: int) -> None:
            for _ in range(count):
                try:
                    response = await client.get("/limited")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                else:
                    statuses[response.status_code] += 1
                    pids[response.headers.get("x-worker-pid", "?")] += 1

        share, extra = divmod(REQUESTS, CLIENTS)
        await asyncio.gather(*(one_client(share + (i < extra)) for i in range(CLIENTS)))
    return statuses, pids, errors


@pytest.fixture(params=["redis", "cluster"])
def storage(request: pytest.FixtureRequest) -> str:
    """A private Redis of this test's own, or the session's Redis Cluster (each test
    names its rule after a fresh token, so the counters on it are its own)."""
    if request.param == "redis":
        server: PrivateRedis = request.getfixturevalue("private_redis")
        return server.url
    cluster: PrivateCluster = request.getfixturevalue("redis_cluster")
    return cluster.url


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
async def test_exactly_the_limit_across_workers(kind: str, storage: str, strategy: str,
                                                tmp_path: Path) -> None:
    """``strategy``: each of the three (the fixture of tests/conftest.py)."""
    name = f"exact-{kind}-{uuid.uuid4().hex[:10]}"
    # Per hour: a GCRA bucket frees one request every window / LIMIT, which must not
    # happen during the burst for the count to be exact.
    env = server_env(storage, f"{LIMIT}/hour", policy="deny", strategy=strategy, name=name)
    with serve(kind, WORKERS, env, tmp_path) as server:
        statuses, pids, errors = await burst(server.base)
        output = server.output()
    context = (f"{kind} {strategy} on {storage}: statuses {dict(statuses)}, "
               f"answers per worker {dict(pids)}, errors {errors[:3]}; server output:\n{output}")
    assert not errors, context
    assert statuses == Counter({200: LIMIT, 429: REQUESTS - LIMIT}), context
    # Several processes really did share the counter (not one worker serving all).
    assert len(pids) >= 2, context
