"""In-process cost: µs per request through each variant, no server, no HTTP client.

For each round every configuration runs one batch of sequential requests (the order
rotates from round to round, so drift in the machine's speed spreads over all of them);
the result is the median over rounds with the min-max spread. The overhead of a variant is
computed round by round against the bare app of the same round.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .apps import (
    ASGI_VARIANTS,
    LIMIT_PER_MINUTE,
    WSGI_VARIANTS,
    Built,
    build_asgi,
    build_wsgi,
    measured_on,
)
from .drivers import run_asgi, run_wsgi
from .stats import summary

__all__ = ["Config", "configs", "run"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Config:
    interface: str  # "asgi" | "wsgi"
    variant: str
    storage: str  # "-" (bare), "memory" or "redis"

    @property
    def name(self) -> str:
        return f"{self.interface}/{self.storage}/{self.variant}"


def configs(storages: tuple[str, ...] = ("memory", "redis")) -> list[Config]:
    out: list[Config] = []
    for interface, variants in (("asgi", ASGI_VARIANTS), ("wsgi", WSGI_VARIANTS)):
        out.append(Config(interface, "bare", "-"))
        out += [Config(interface, v, s) for s in storages for v in variants
                if v != "bare" and measured_on(v, s)]
    return out


def storage_url(config: Config, redis_url: Callable[[int], str]) -> str:
    """``memory://``, or the private Redis with one db per configuration."""
    if config.storage != "redis":
        return "memory://"
    return redis_url(1 + configs().index(config) % 15)


class _Timer:
    """Runs *n* requests through one built app and returns the seconds they took."""

    def __init__(self, config: Config, built: Built, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.built = built
        self.loop = loop
        self.statuses: Counter[int] = Counter()

    def __call__(self, n: int) -> float:
        gc.collect()
        if self.config.interface == "asgi":
            coro = run_asgi(self.built.app, n, self.statuses)
            start = time.perf_counter()
            self.loop.run_until_complete(coro)
        else:
            start = time.perf_counter()
            run_wsgi(self.built.app, n, self.statuses)
        return time.perf_counter() - start


def _references() -> dict[str, Callable[[], object]]:
    """Storage calls alone, no app: what a request through a limiter costs at the least."""
    import limits
    import limits.storage
    import limits.strategies

    from ratelimit_mw import RateLimiter

    item = limits.parse(f"{LIMIT_PER_MINUTE}/minute")
    fixed = limits.strategies.FixedWindowRateLimiter(limits.storage.MemoryStorage())
    ours = RateLimiter("memory://")
    spec = f"{LIMIT_PER_MINUTE}/minute"

    def hit_and_stats() -> object:
        fixed.hit(item, "127.0.0.1")
        return fixed.get_window_stats(item, "127.0.0.1")

    return {
        "limits FixedWindowRateLimiter.hit, MemoryStorage": lambda: fixed.hit(
            item, "127.0.0.1"),
        "limits hit + get_window_stats, MemoryStorage": hit_and_stats,
        "ratelimit_mw RateLimiter.hit, memory://": lambda: ours.hit(spec, "127.0.0.1"),
    }


def _time_calls(call: Callable[[], object], n: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        call()
    return time.perf_counter() - start


def run_references(*, rounds: int, batch_seconds: float) -> list[dict[str, Any]]:
    rows = []
    for name, call in _references().items():
        _time_calls(call, 200)
        n = max(1000, int(batch_seconds / (_time_calls(call, 1000) / 1000)))
        rows.append({"name": name, "calls_per_round": n,
                     "us_per_call": summary([_time_calls(call, n) / n * 1e6
                                             for _ in range(rounds)])})
    return rows


def run(redis_url: Callable[[int], str], *, rounds: int, batch_seconds: float,
        log: Log = print) -> dict[str, Any]:
    """Time every configuration; the section ``inprocess`` of results.json."""
    loop = asyncio.new_event_loop()
    timers: list[_Timer] = []
    try:
        for config in configs():
            url = storage_url(config, redis_url)
            build = build_asgi if config.interface == "asgi" else build_wsgi
            timers.append(_Timer(config, build(config.variant, url), loop))
        # Warm up (imports, connections, scripts loaded), then size each batch to take
        # about batch_seconds.
        sizes: dict[Config, int] = {}
        for timer in timers:
            timer(50)
            per_request = timer(200) / 200
            sizes[timer.config] = max(200, min(200_000, int(batch_seconds / per_request)))
        samples: dict[Config, list[float]] = {t.config: [] for t in timers}
        for r in range(rounds):
            shift = r % len(timers)
            for timer in timers[shift:] + timers[:shift]:
                n = sizes[timer.config]
                samples[timer.config].append(timer(n) / n * 1e6)
            log(f"  in-process round {r + 1}/{rounds} done")
        rows = []
        for timer in timers:
            config = timer.config
            bare = samples[Config(config.interface, "bare", "-")]
            mine = samples[config]
            rows.append({
                "interface": config.interface,
                "variant": config.variant,
                "storage": config.storage,
                "requests_per_round": sizes[config],
                "us_per_request": summary(mine),
                "ratio_to_bare": summary([m / b for m, b in zip(mine, bare, strict=True)]),
                "overhead_us": summary([m - b for m, b in zip(mine, bare, strict=True)]),
                "statuses": {str(k): v for k, v in sorted(timer.statuses.items())},
            })
        references = run_references(rounds=rounds, batch_seconds=batch_seconds / 2)
        return {"rounds": rounds, "batch_seconds": batch_seconds, "rows": rows,
                "references": references}
    finally:
        for timer in timers:
            if timer.config.interface == "asgi":
                loop.run_until_complete(timer.built.aclose())
            else:
                timer.built.close()
        loop.close()
