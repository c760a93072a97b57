"""The ``memory://`` store at scale: RSS per identity, and a hit's cost at 1 and at N keys.

Every measurement runs in a fresh interpreter (``python -m benchmarks.memory ...``), one
per strategy and store, so that no other part's objects, and no memory an earlier store
freed, count in its RSS.

* **Scale.** ``RateLimiter("memory://?max_keys=2000000", strategy=...)``: the process's
  RSS before and after *identities* distinct identities each made one
  ``hit("100/minute", identity)``. Then µs per ``hit`` of one repeated identity on that
  store, and on a second store of the same process that holds that identity alone, in
  alternating rounds (so a drift in the machine's speed falls on both); the ratio is taken
  round by round. The repeated identity has a generous limit, so every timed hit is
  admitted and writes, as a request under its limit does.
* **Default cap.** ``RateLimiter("memory://", strategy=...)``, ``max_keys`` at its default:
  the RSS once *max_keys* identities have a counter, then after *beyond* more new
  identities, which share the overflow counter: what a default deployment can reach.

The fill's time is kept in results.json for information only: it includes building the
identity strings. Keys expire a window after their first hit; ``live_keys`` records the
store's size as the timing began and ended, so an expiry during a run would show.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .apps import LIMIT_PER_MINUTE
from .stats import summary

__all__ = ["STRATEGIES", "default_max_keys", "measure", "run"]

Log = Callable[[str], None]

STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter", "gcra")
#: A cap above every run's identities: the scale run never reaches the overflow.
SCALE_URL = "memory://?max_keys=2000000"
FILL_LIMIT = "100/minute"
#: A GCRA key lives one emission interval (window / amount) per hit, 0.6 s at 100/minute:
#: an amount of 1 keeps it a window, as long as the window strategies keep a counter, so
#: the store holds every identity while it is measured.
FILL_LIMITS = {"gcra": "1/minute"}
PROBE_LIMIT = f"{LIMIT_PER_MINUTE}/minute"
PROBE = "probe"
REPO = Path(__file__).resolve().parent.parent


def rss() -> tuple[int, str]:
    """This process's resident set size in bytes, and where it was read."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024, "VmRSS"
    except OSError:
        pass
    # Elsewhere the peak RSS, which is the current one while a store only grows.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"


def _time_hits(hit: Callable[[str, str], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        hit(PROBE_LIMIT, PROBE)
    return (time.perf_counter() - start) / calls * 1e6


def measure(url: str, strategy: str, checkpoints: Sequence[int], rounds: int,
            calls: int) -> dict[str, Any]:
    """In this process: fill one store up to each checkpoint, RSS at each, then time."""
    from ratelimit_mw import RateLimiter

    fill_limit = FILL_LIMITS.get(strategy, FILL_LIMIT)
    big = RateLimiter(url, strategy=strategy)
    alone = RateLimiter(url, strategy=strategy)
    store, store_alone = big.memory, alone.memory
    if store is None or store_alone is None:
        raise ValueError(f"{url!r} is not a memory:// storage")
    for limiter in (big, alone):  # the code paths and the parsed limits, before the RSS
        for limit in (PROBE_LIMIT, fill_limit):
            limiter.hit(limit, PROBE)
            limiter.reset(limit, PROBE)  # the stores start empty
    gc.collect()
    before, source = rss()
    marks = []
    filled, fill_seconds = 0, 0.0
    hit = big.hit
    for mark in sorted(checkpoints):
        start = time.perf_counter()
        for i in range(filled, mark):
            hit(fill_limit, f"user:{i}")
        fill_seconds += time.perf_counter() - start
        filled = mark
        gc.collect()
        marks.append({"identities": mark, "live_keys": len(store), "rss": rss()[0]})
    one_key: list[float] = []
    n_keys: list[float] = []
    keys_before = len(store)
    if rounds:
        _time_hits(alone.hit, calls // 4)  # warm up; the repeated identity's counter
        _time_hits(big.hit, calls // 4)
        keys_before = len(store)
        for r in range(rounds):
            pair = [(one_key, alone), (n_keys, big)]
            for samples, limiter in pair if r % 2 == 0 else pair[::-1]:
                samples.append(_time_hits(limiter.hit, calls))
    return {"url": url, "strategy": strategy, "max_keys": store.max_keys,
            "rss_source": source, "rss_before": before, "checkpoints": marks,
            "fill_seconds": fill_seconds, "calls_per_round": calls,
            "us_one_key": one_key, "us_n_keys": n_keys,
            "live_keys": [keys_before, len(store)], "alone_keys": len(store_alone)}


def _child(url: str, strategy: str, checkpoints: Sequence[int], rounds: int,
           calls: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.memory", "--url", url,
               "--strategy", strategy, "--rounds", str(rounds), "--calls", str(calls),
               "--checkpoints", ",".join(map(str, checkpoints))]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                           f"{done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def default_max_keys(url: str = "memory://") -> int:
    """The ``max_keys`` of the store *url* makes (``memory://``: the default cap)."""
    from ratelimit_mw import RateLimiter

    store = RateLimiter(url).memory
    if store is None:
        raise ValueError(f"{url!r} is not a memory:// storage")
    return store.max_keys


def _row(strategy: str, scale: dict[str, Any], cap: dict[str, Any]) -> dict[str, Any]:
    grown = scale["checkpoints"][-1]
    identities = grown["identities"]
    at_cap, past = cap["checkpoints"]
    beyond = past["identities"] - at_cap["identities"]
    return {
        "strategy": strategy,
        "identities": identities,
        "rss_growth": grown["rss"] - scale["rss_before"],
        "bytes_per_identity": (grown["rss"] - scale["rss_before"]) / identities,
        # The store's keys while timing (first, last): every identity plus the repeated one.
        "live_keys": scale["live_keys"],
        "fill_us_per_identity": scale["fill_seconds"] / identities * 1e6,
        "calls_per_round": scale["calls_per_round"],
        "us_per_hit_1_key": summary(scale["us_one_key"]),
        "us_per_hit_n_keys": summary(scale["us_n_keys"]),
        "ratio": summary([n / one for n, one in zip(scale["us_n_keys"], scale["us_one_key"],
                                                     strict=True)]),
        "default_cap": {
            "max_keys": cap["max_keys"],
            "rss_growth_at_cap": at_cap["rss"] - cap["rss_before"],
            "live_keys_at_cap": at_cap["live_keys"],
            "beyond": beyond,
            "rss_growth_past_cap": past["rss"] - at_cap["rss"],
            "live_keys_past_cap": past["live_keys"],
        },
    }


def run(*, identities: int, rounds: int, calls: int, beyond: int,
        cap_url: str = "memory://", log: Log = print) -> dict[str, Any]:
    """Both measurements for every strategy; the section ``memory`` of results.json."""
    started = time.monotonic()
    load_before = [round(x, 2) for x in os.getloadavg()]
    cap = default_max_keys(cap_url)
    rows = []
    source = ""
    for strategy in STRATEGIES:
        scale = _child(SCALE_URL, strategy, [identities], rounds, calls)
        capped = _child(cap_url, strategy, [cap, cap + beyond], 0, 0)
        rows.append(_row(strategy, scale, capped))
        source = scale["rss_source"]
        log(f"  memory {strategy}: {rows[-1]['bytes_per_identity']:.0f} bytes/identity, "
            f"{rows[-1]['ratio']['median']:.2f} x per hit at {identities:,} keys")
    return {"identities": identities, "rounds": rounds, "calls_per_round": calls,
            "scale_url": SCALE_URL, "fill_limit": FILL_LIMIT,
            "fill_limits": FILL_LIMITS, "probe_limit": PROBE_LIMIT,
            "cap_url": cap_url, "max_keys": cap, "beyond": beyond, "rss_source": source,
            "seconds": round(time.monotonic() - started, 1),
            # Its own: the run's load averages cover every part measured with it.
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()], "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                     description="one child of the memory part (JSON out)")
    parser.add_argument("--url", required=True)
    parser.add_argument("--strategy", required=True, choices=STRATEGIES)
    parser.add_argument("--checkpoints", required=True,
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--calls", type=int, default=0)
    args = parser.parse_args(argv)
    result = measure(args.url, args.strategy, args.checkpoints, args.rounds, args.calls)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
