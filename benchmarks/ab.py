"""A/B: the in-process cost of the default path, this checkout against another commit.

    .venv/bin/python -m benchmarks.ab a3c1e94 [--rounds 8] [--requests 20000]

Both versions of the package run, alternately, in fresh processes with the same driver:
our ASGI and WSGI middlewares in front of bare callables, ``memory://``, static
``default_limits`` and one rule, one key per client (7 clients, 50 paths): µs per request,
the median and minimum over rounds. The other commit is checked out into a temporary git
worktree, removed at the end. Machines drift between runs; alternating within one run is
what makes the two columns comparable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DRIVER = r'''
import asyncio, gc, sys, time
from ratelimit_mw import RateLimitMiddleware, Rule, WSGIRateLimitMiddleware

N = int(sys.argv[1])
rules = [Rule("/login", "5/minute", methods=["POST"])]

async def bare(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})

def wbare(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

asgi = RateLimitMiddleware(bare, storage="memory://", default_limits="1000000/minute",
                           rules=rules)
wsgi = WSGIRateLimitMiddleware(wbare, storage="memory://",
                               default_limits="1000000/minute", rules=rules)

async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}

async def send(message):
    pass

async def run_asgi(n):
    started = time.perf_counter()
    for i in range(n):
        await asgi({"type": "http", "method": "GET", "path": f"/items/{i % 50}",
                    "raw_path": b"/items/1", "query_string": b"", "headers": [(b"host", b"x")],
                    "client": (f"10.0.{i % 7}.1", 1234), "server": ("x", 80),
                    "scheme": "http", "http_version": "1.1", "root_path": ""}, receive, send)
    return (time.perf_counter() - started) / n * 1e6

def run_wsgi(n):
    started = time.perf_counter()
    for i in range(n):
        body = wsgi({"REQUEST_METHOD": "GET", "PATH_INFO": f"/items/{i % 50}",
                     "QUERY_STRING": "", "REMOTE_ADDR": f"10.0.{i % 7}.1",
                     "wsgi.url_scheme": "http", "SERVER_NAME": "x", "SERVER_PORT": "80"},
                    lambda status, headers, exc_info=None: None)
        for _ in body:
            pass
    return (time.perf_counter() - started) / n * 1e6

async def both():
    await run_asgi(2000)
    return await run_asgi(N)

gc.disable()
run_wsgi(2000)
print(asyncio.run(both()), run_wsgi(N))
'''


def measure(src: Path, requests: int) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", DRIVER, str(requests)], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    asgi, wsgi = done.stdout.split()
    return float(asgi), float(wsgi)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the other commit")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(other), args.rev],
                       cwd=REPO, check=True)
        try:
            runs: dict[str, list[tuple[float, float]]] = {args.rev: [], "this": []}
            for _ in range(args.rounds):
                runs[args.rev].append(measure(other / "src", args.requests))
                runs["this"].append(measure(REPO / "src", args.requests))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=REPO,
                           check=False)
    print("µs per request (median [min]) over", args.rounds, "rounds")
    for name, rows in runs.items():
        asgi, wsgi = [r[0] for r in rows], [r[1] for r in rows]
        print(f"{name:>10}  ASGI {statistics.median(asgi):.2f} [{min(asgi):.2f}]  "
              f"WSGI {statistics.median(wsgi):.2f} [{min(wsgi):.2f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
