"""CPU instructions per request, counted by callgrind: what the shared machine's load
cannot move, unlike a timing.

    python -m benchmarks.instructions asgi ratelimit-mw      # Starlette
    python -m benchmarks.instructions fastapi ratelimit-mw   # FastAPI (bare, ratelimit-mw*)
    python -m benchmarks.instructions wsgi flask-limiter     # Flask

Runs the app under ``valgrind --tool=callgrind`` twice, for 1,000 and 6,000 in-process
requests (after 200 to warm up), and prints the difference divided by 5,000: start-up and
import cost cancel out. Memory storage, a limit never reached. Whichever ``ratelimit_mw``
the interpreter imports is measured: run it with the venv that has the build to count.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections import Counter
from typing import Any

from .apps import LIMIT_PER_MINUTE, Built, _item, _our_options, build_asgi, build_wsgi
from .drivers import run_asgi, run_wsgi

WARM_UP = 200
SHORT, LONG = 1_000, 6_000


def build_fastapi(variant: str) -> Built:
    """A FastAPI app with the route of `benchmarks.apps`, bare or behind our middleware."""
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return _item(item_id)

    if variant == "bare":
        return Built(api)
    from ratelimit_mw import RateLimitMiddleware

    middleware = RateLimitMiddleware(api, default_limits=f"{LIMIT_PER_MINUTE}/minute",
                                     storage="memory://", **_our_options(variant))
    return Built(middleware)


def drive(iface: str, variant: str, n: int) -> None:
    """*n* requests through the app (after the warm-up); every one must be answered 200."""
    statuses: Counter[int] = Counter()
    if iface == "wsgi":
        app = build_wsgi(variant).app
        run_wsgi(app, WARM_UP, statuses)
        run_wsgi(app, n, statuses)
    else:
        app = (build_asgi(variant) if iface == "asgi" else build_fastapi(variant)).app
        loop = asyncio.new_event_loop()
        loop.run_until_complete(run_asgi(app, WARM_UP, statuses))
        loop.run_until_complete(run_asgi(app, n, statuses))
    if set(statuses) != {200}:
        raise SystemExit(f"not all answered 200: {dict(statuses)}")


def count(iface: str, variant: str, n: int) -> int:
    """Instructions callgrind collects for a whole run of *n* requests."""
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-m", "benchmarks.instructions", "--drive", iface, variant, str(n)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise SystemExit(run.stderr)
    return int(found.group(1))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--drive"]:
        drive(argv[1], argv[2], int(argv[3]))
        return
    iface, variant = argv
    per_request = (count(iface, variant, LONG) - count(iface, variant, SHORT)) // (LONG - SHORT)
    print(f"{iface} {variant}: {per_request} instructions/request")


if __name__ == "__main__":
    main(sys.argv[1:])
