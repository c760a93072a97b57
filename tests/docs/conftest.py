"""Fixtures for running the docs' code blocks."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import disconnect_new_pools, sync_pools
from tests.docs.codeblocks import for_tests, titled_files


@pytest.fixture
def page_env(redis_url: str, redis_client: Any, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean db 13, $REDIS_URL on it, no RATELIMIT_* variables, a scratch cwd; the
    loggers' levels and prometheus_client's default registry restored afterwards."""
    for name in list(os.environ):
        if name.startswith("RATELIMIT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.chdir(tmp_path)
    manager = logging.Logger.manager
    levels = {name: logger.level for name, logger in manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}
    root_level = logging.getLogger().level
    import prometheus_client

    collectors = set(prometheus_client.REGISTRY._collector_to_names)
    pools = sync_pools()
    try:
        yield tmp_path
    finally:
        # The pages build apps and limiters and never close them, as users' apps don't:
        # release their connections now, not at some later collection (see tests/conftest).
        disconnect_new_pools(pools)
        for collector in set(prometheus_client.REGISTRY._collector_to_names) - collectors:
            prometheus_client.REGISTRY.unregister(collector)
        logging.getLogger().setLevel(root_level)
        for name, logger in manager.loggerDict.items():
            if isinstance(logger, logging.Logger):
                logger.setLevel(levels.get(name, logging.NOTSET))


def write_titled_files(path: Path, directory: Path, redis_url: str) -> None:
    for block in titled_files(path):
        assert block.title is not None
        (directory / block.title).write_text(for_tests(block.code, redis_url), encoding="utf-8")



