"""One real server per cell of the matrix, started once per test module.

``asgi_server`` and ``wsgi_server`` are module-scoped and parametrized over the cells,
so pytest starts each server once, runs every check of the module against it, and
stops it (its whole process group) before starting the next.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator

import pytest
import redis

from tests.e2e.matrix import (
    ASGI_COMBOS,
    ASGI_REDIS_COMBO,
    WSGI_COMBOS,
    WSGI_REDIS_COMBO,
    Combo,
    Served,
    check_loopback_block,
)
from tests.integration.realservers import serve_command

#: What uvicorn, hypercorn, granian, gunicorn and waitress log with an exception or error.
_TROUBLE = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b")


def _params(combos: list[Combo], redis_combo: Combo) -> list[object]:
    return [*(pytest.param(combo, id=combo.id) for combo in combos),
            pytest.param(redis_combo, id=redis_combo.id, marks=pytest.mark.redis)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed check shows the end of its server's log next to the assertion."""
    report = yield
    served = getattr(item, "funcargs", {}).get("asgi_server") or getattr(
        item, "funcargs", {}).get("wsgi_server")
    if report.failed and isinstance(served, Served):
        report.sections.append((f"{served.combo.id} log", served.output() or "(empty)"))
    return report


@pytest.fixture(scope="session")
def loopback_block() -> None:
    check_loopback_block()


def _serve(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    combo: Combo = request.param
    redis_url = None
    if combo.storage == "redis":
        redis_url = str(request.getfixturevalue("redis_url"))
        with redis.Redis.from_url(redis_url) as client:
            client.flushdb()  # the tests' own db: no counters from an earlier run
    log_dir = tmp_path_factory.mktemp(combo.id)
    with serve_command(combo.id, combo.argv, cwd=combo.app.directory,
                       env=combo.env(redis_url), log_dir=log_dir) as server:
        yield Served(combo, server, redis_url)
        # A check can pass over HTTP while the server logged an exception (say, an ASGI
        # message out of order after the response went out): that fails the cell too.
        output = server.output()
        if _TROUBLE.search(output):
            pytest.fail(f"{combo.id} logged an error while serving the checks:\n{output}")
    if redis_url is not None:
        with redis.Redis.from_url(redis_url) as client:
            client.flushdb()


@pytest.fixture(scope="module", params=_params(ASGI_COMBOS, ASGI_REDIS_COMBO))
def asgi_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                loopback_block: None) -> Iterator[Served]:
    yield from _serve(request, tmp_path_factory)


@pytest.fixture(scope="module", params=_params(WSGI_COMBOS, WSGI_REDIS_COMBO))
def wsgi_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                loopback_block: None) -> Iterator[Served]:
    yield from _serve(request, tmp_path_factory)
