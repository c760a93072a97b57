"""What each strategy costs Redis: commands run and server µs per check, one limit.

    .venv/bin/python -m benchmarks.strategies [--checks 2000]

On a private redis-server (no other traffic): for each strategy, a warm-up, then
``CONFIG RESETSTAT``, *checks* checks of one client's plan with one limit that is never
reached (``1000000/minute``; ``1000000/hour`` too for two limits), then ``INFO
commandstats``: the commands Redis ran per check (those inside the script included) and
Redis's own µs per check. One round trip each, always (one ``EVALSHA``).
"""

from __future__ import annotations

import argparse
from typing import Any

from ratelimit_mw import RateLimiter, RequestInfo, Rule
from ratelimit_mw._core import Policy
from ratelimit_mw._strategies import STRATEGIES

from .redis_server import PrivateRedis


def measure(url: str, port: int, strategy: str, limits: str, checks: int) -> dict[str, Any]:
    import redis

    plan = Policy(rules=[Rule("/x", limits)]).plan(RequestInfo("GET", "/x",
                                                               client="203.0.113.7"))
    assert plan is not None
    limiter = RateLimiter(url, strategy=strategy)
    control: Any = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(50):
            limiter.check(plan)
        control.config_resetstat()
        for _ in range(checks):
            limiter.check(plan)
        stats = control.info("commandstats")
    finally:
        limiter.close()
        control.close()
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()
             if k.startswith("cmdstat_") and k != "cmdstat_config|resetstat"}
    return {"commands": sum(calls.values()) / checks,
            "by_name": {k: v / checks for k, v in sorted(calls.items())},
            "server_us": int(stats["cmdstat_evalsha"]["usec"]) / checks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=2000)
    args = parser.parse_args()
    print("| strategy | limits | commands run per check | by name | Redis µs per check |")
    print("| --- | ---: | ---: | --- | ---: |")
    with PrivateRedis() as server:
        for number, strategy in enumerate(STRATEGIES):
            for count, limits in ((1, "1000000/minute"), (2, "1000000/minute;1000000/hour")):
                row = measure(server.url(number + 1), server.port, strategy, limits,
                              args.checks)
                names = ", ".join(f"{k} {v:g}" for k, v in row["by_name"].items())
                print(f"| {strategy} | {count} | {row['commands']:.1f} | {names} "
                      f"| {row['server_us']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
