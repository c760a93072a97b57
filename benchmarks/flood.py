"""A flood: one client at 10 times its limit, under uvicorn on Redis.

The limit is set per second to a tenth of what the bare app serves (measured first, in
the same run), so nine requests in ten are refused. Three servers, visited in turn by wrk
(``-t1 -c32``), round after round: the bare app, ours with ``local_denials`` (the
default), and ours without. Per server and round: requests/s against the bare app's of
that round, p99, the share refused, and ``EVALSHA`` calls per refused request (Redis's own
``INFO commandstats``, reset before each run; the allowed requests' calls are taken off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .apps import FLOOD_VARIANTS
from .inprocess import Config
from .servers import Server, run_wrk, start, wait_ready
from .stats import summary

__all__ = ["run"]

Log = Callable[[str], None]


def _evalsha_calls(control: Any) -> int:
    stats = control.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def run(redis_url: Callable[[int], str], port: int, *, rounds: int, seconds: int,
        warmup: int, log: Log = print) -> dict[str, Any]:
    """The section ``flood`` of results.json."""
    import redis

    control: Any = redis.Redis(host="127.0.0.1", port=port)
    servers: list[Server] = []
    try:
        bare = start("uvicorn", Config("asgi", "bare", "-"), "memory://")
        servers.append(bare)
        wait_ready(bare)
        run_wrk(bare.port, warmup)
        capacity = run_wrk(bare.port, seconds)["rps"]
        per_second = max(1, int(capacity / 10))
        log(f"  flood: bare serves {capacity:,.0f} req/s; the limit is {per_second}/second")
        for db, variant in enumerate(FLOOD_VARIANTS, start=1):
            server = start("uvicorn", Config("asgi", variant, "redis"), redis_url(db),
                           limit=f"{per_second}/second")
            servers.append(server)
            wait_ready(server)
            run_wrk(server.port, warmup)
        runs: dict[str, list[dict[str, Any]]] = {s.config.variant: [] for s in servers}
        for r in range(rounds):
            shift = r % len(servers)
            for server in servers[shift:] + servers[:shift]:
                before = _evalsha_calls(control)
                result = run_wrk(server.port, seconds)
                result["evalsha"] = _evalsha_calls(control) - before
                runs[server.config.variant].append(result)
            log(f"  flood round {r + 1}/{rounds} done")
    finally:
        for server in servers:
            server.stop()
        control.close()
    rows = []
    for variant, mine in runs.items():
        rows.append({
            "variant": variant,
            "rps": summary([m["rps"] for m in mine]),
            "ratio_to_bare": summary([m["rps"] / b["rps"]
                                      for m, b in zip(mine, runs["bare"], strict=True)]),
            "p99_ms": summary([m["p99_ms"] for m in mine]),
            "refused_share": summary([m["non_2xx"] / m["requests"] if m["requests"] else 0.0
                                      for m in mine]),
            # Every allowed request costs its one call; what is left is the refusals'.
            "script_calls_per_refused": None if variant == "bare" else summary([
                max(0, m["evalsha"] - (m["requests"] - m["non_2xx"])) / m["non_2xx"]
                if m["non_2xx"] else 0.0 for m in mine]),
        })
    return {"rounds": rounds, "seconds": seconds, "per_second": per_second,
            "bare_capacity_rps": capacity, "rows": rows}
