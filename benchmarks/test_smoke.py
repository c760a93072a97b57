"""Every benchmark variant really answers, with its quota headers, and really limits.

Run by ``benchmarks/run`` before it measures anything, so that the suite cannot time a
broken app (one that 500s, or a limiter that is silently not engaged). Not collected by the
package's own test suite (``testpaths = ["tests"]``); run it by hand with::

    .venv/bin/python -m pytest benchmarks/test_smoke.py -q

Nothing is skipped: a missing benchmark dependency is a failure that says what to install.
Redis variants run against a private ``redis-server`` (one db per case).
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from benchmarks import memory, report
from benchmarks.apps import (
    ASGI_VARIANTS,
    BODY,
    EXPECTED_HEADERS,
    FLOOD_VARIANTS,
    FLOORS,
    WSGI_VARIANTS,
    build_asgi,
    build_wsgi,
    measured_on,
)
from benchmarks.drivers import Response, asgi_request, wsgi_request
from benchmarks.redis_server import PrivateRedis

INSTALL = "install them with: .venv/bin/python -m pip install -r benchmarks/requirements.txt"
MODULES = {"slowapi": "slowapi", "flask-limiter": "flask_limiter",
           "asgi-ratelimit": "ratelimit", "starlette": "starlette", "flask": "flask",
           "redis": "redis", "uvicorn": "uvicorn", "gunicorn": "gunicorn"}

CASES = [(interface, v, s) for interface, variants in (("asgi", ASGI_VARIANTS),
                                                      ("wsgi", WSGI_VARIANTS))
         for s in ("memory", "redis") for v in variants if measured_on(v, s)] + [
    ("asgi", v, "redis") for v in FLOOD_VARIANTS]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


def test_benchmark_dependencies_are_installed() -> None:
    missing = []
    for dist, module in MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    assert not missing, f"benchmark dependencies missing: {', '.join(missing)}; {INSTALL}"


def _three_requests(interface: str, variant: str, storage: str) -> list[Response]:
    try:
        if interface == "asgi":
            built = build_asgi(variant, storage, per_minute=2)

            async def run() -> list[Response]:
                try:
                    return [await asgi_request(built.app) for _ in range(3)]
                finally:
                    await built.aclose()

            return asyncio.run(run())
        built = build_wsgi(variant, storage, per_minute=2)
        try:
            return [wsgi_request(built.app) for _ in range(3)]
        finally:
            built.close()
    except ImportError as error:
        pytest.fail(f"{variant}: {error}; {INSTALL}")


@pytest.mark.parametrize(("interface", "variant", "storage"), CASES,
                         ids=[f"{i}-{v}-{s}" for i, v, s in CASES])
def test_variant_answers_with_headers_and_limits(
    interface: str, variant: str, storage: str, redis_server: PrivateRedis
) -> None:
    db = CASES.index((interface, variant, storage)) % 16
    url = redis_server.url(db) if storage == "redis" else "memory://"
    pings = _pings(redis_server) if variant in FLOORS else 0
    first, second, third = _three_requests(interface, variant, storage=url)

    for response in (first, second):
        assert response.status == 200, response
        assert json.loads(response.body) == BODY, response
        assert response.headers["content-type"].startswith("application/json")
        for header in EXPECTED_HEADERS[variant]:
            assert header in response.headers, f"{variant}: no {header} in {response}"
    if "x-ratelimit-limit" in EXPECTED_HEADERS[variant]:
        assert first.headers["x-ratelimit-limit"] == "2"
        assert first.headers["x-ratelimit-remaining"] == "1"
        assert second.headers["x-ratelimit-remaining"] == "0"

    if variant == "bare" or variant in FLOORS:
        assert third.status == 200, third
        if variant in FLOORS:  # ... after a round trip each
            assert _pings(redis_server) >= pings + 3, variant
        return
    # The limiter is engaged: the third request of a 2/minute limit is refused.
    assert third.status == 429, f"{variant} on {storage} did not limit: {third}"
    if storage == "redis":
        # ... and counts in Redis, not in a silent in-process fallback.
        import redis

        client: Any = redis.Redis.from_url(url)
        try:
            assert client.dbsize() > 0, f"{variant}: nothing written to Redis db {db}"
        finally:
            client.close()


def _pings(server: PrivateRedis) -> int:
    import redis

    client: Any = redis.Redis(port=server.port)
    try:
        return int(client.info("commandstats").get("cmdstat_ping", {}).get("calls", 0))
    finally:
        client.close()


@pytest.mark.parametrize("builder", [build_asgi, build_wsgi])
def test_unknown_variant_is_an_error(builder: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="unknown"):
        builder("nonesuch")


def test_memory_part_measures_every_strategy() -> None:
    """A tiny run of the memory part: a child per strategy and store, and its table."""
    section = memory.run(identities=2000, rounds=1, calls=200, beyond=500,
                         cap_url="memory://?max_keys=1000", log=lambda _line: None)

    assert [row["strategy"] for row in section["rows"]] == list(memory.STRATEGIES)
    for row in section["rows"]:
        assert row["live_keys"] == [2001, 2001], row  # every identity and the repeated one
        assert row["us_per_hit_1_key"]["median"] > 0, row
        assert row["us_per_hit_n_keys"]["median"] > 0, row
        cap = row["default_cap"]
        assert cap["live_keys_at_cap"] == 1000, row
        assert cap["live_keys_past_cap"] == 1001, row  # the cap and its overflow counter
    results = {"memory": {"meta": {}, **section}}
    assert not report.anomalies(results)
    assert "### `memory://` at scale: 2,000 identities" in report.markdown(results)
