"""The benchmark suite's entry point: ``python -m benchmarks [--quick] [--only PART]``.

Use ``benchmarks/run`` (it installs the dependencies and runs the smoke test first).

A full run writes ``benchmarks/results.json``, ``benchmarks/chart.svg`` (and its copy
``docs/benchmarks.svg``) and the generated part of ``docs/benchmarks.md``. ``--quick``
writes ``benchmarks/results-quick.json`` and ``benchmarks/chart-quick.svg`` only, so a
smoke run never replaces the published numbers. ``--only`` runs one part and keeps the
other parts of the existing results file.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import flood, inprocess, memory, redis_stats, report, servers
from .redis_server import PrivateRedis, redis_version

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PARTS = ("inprocess", "servers", "redis", "flood", "memory")
DISTRIBUTIONS = ("ratelimit-mw", "limits", "redis", "starlette", "flask", "slowapi",
                 "flask-limiter", "asgi-ratelimit", "uvicorn", "uvloop", "httptools",
                 "gunicorn")



@dataclass(frozen=True)
class Settings:
    """Rounds and durations of one run."""

    inprocess_rounds: int
    inprocess_batch_seconds: float
    server_rounds: int
    server_seconds: int
    server_warmup_seconds: int
    redis_requests: int
    memory_identities: int
    memory_rounds: int
    memory_calls: int
    memory_beyond_cap: int


FULL = Settings(inprocess_rounds=7, inprocess_batch_seconds=0.3, server_rounds=5,
                server_seconds=3, server_warmup_seconds=1, redis_requests=500,
                memory_identities=1_000_000, memory_rounds=9, memory_calls=10_000,
                memory_beyond_cap=20_000)
QUICK = Settings(inprocess_rounds=3, inprocess_batch_seconds=0.05, server_rounds=1,
                 server_seconds=1, server_warmup_seconds=1, redis_requests=100,
                 memory_identities=100_000, memory_rounds=3, memory_calls=5_000,
                 memory_beyond_cap=10_000)


def log(message: str) -> None:
    print(message, flush=True)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10, check=False)
    except OSError:
        return ""
    return done.stdout


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    out = {}
    for name in DISTRIBUTIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def code_state() -> dict[str, Any]:
    """The commit and the uncommitted changes under src/ right now."""
    changes = [line[3:] for line in _git("status", "--porcelain", "--", "src").splitlines()
               if line.strip()]
    return {"commit": _git("rev-parse", "--short", "HEAD").strip() or "?",
            "src_changes": changes}


def section_meta(quick: bool, code: dict[str, Any]) -> dict[str, Any]:
    """When a part was measured, and on what code (which may have uncommitted changes)."""
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **code,
            "quick": quick}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_meta(argv: Sequence[str], seconds: float, load_before: list[float]) -> dict[str, Any]:
    return {
        "command": " ".join(["benchmarks/run", *argv]),
        "seconds": round(seconds, 1),
        "cpu": _cpu(),
        "cpus": os.cpu_count(),
        # 1/5/15-minute load averages before and after the run: other work on the machine
        # during a run shows here.
        "load_average_before": load_before,
        "load_average_after": _load(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_server": redis_version(),
        "wrk": servers.wrk_version(),
        "versions": _versions(),
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer, shorter rounds (a smoke test: about a minute); writes "
                             "results-quick.json and chart-quick.svg, leaves the docs alone")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only this part (repeatable); the others are kept from "
                             "the existing results file")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite the chart and the docs' table from "
                             "the existing results file")
    return parser.parse_args(argv)


def write_outputs(results: dict[str, Any], quick: bool) -> list[Path]:
    """results.json, the chart and (not for a quick run) the docs; the paths written."""
    suffix = "-quick" if quick else ""
    results_path = HERE / f"results{suffix}.json"
    chart_path = HERE / f"chart{suffix}.svg"
    results_path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    svg = report.chart_svg(results)
    chart_path.write_text(svg, encoding="utf-8")
    written = [results_path, chart_path]
    if not quick:
        (REPO / "docs" / "benchmarks.svg").write_text(svg, encoding="utf-8")
        report.rewrite_docs(REPO / "docs" / "benchmarks.md", report.markdown(results))
        written += [REPO / "docs" / "benchmarks.svg", REPO / "docs" / "benchmarks.md"]
    return written


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    setting = QUICK if args.quick else FULL
    parts = args.only or list(PARTS)
    results_path = HERE / ("results-quick.json" if args.quick else "results.json")

    results: dict[str, Any] = {}
    if (args.only or args.report_only) and results_path.exists():
        results = json.loads(results_path.read_text(encoding="utf-8"))
    if args.report_only:
        if not results:
            raise SystemExit(f"{results_path} does not exist: run the benchmarks first")
        written = write_outputs(results, args.quick)
        log("wrote " + ", ".join(str(p.relative_to(REPO)) for p in written))
        return 0
    started = time.monotonic()
    load_before = _load()
    # The in-process and Redis parts run the package as this process imports it now; each
    # server imports it again as it starts, so the servers part takes its own stamp.
    import ratelimit_mw  # noqa: F401

    loaded = code_state()
    with PrivateRedis() as redis_server:
        log(f"private redis-server on 127.0.0.1:{redis_server.port}")
        if "inprocess" in parts:
            log("== in-process")
            meta = section_meta(args.quick, loaded)
            section = inprocess.run(redis_server.url,
                                    rounds=setting.inprocess_rounds,
                                    batch_seconds=setting.inprocess_batch_seconds, log=log)
            results["inprocess"] = {"meta": meta, **section}
        if "servers" in parts:
            log("== servers (uvicorn, gunicorn) driven by wrk")
            meta = section_meta(args.quick, code_state())
            section = servers.run(redis_server.url, rounds=setting.server_rounds,
                                  seconds=setting.server_seconds,
                                  warmup=setting.server_warmup_seconds, log=log)
            results["servers"] = {"meta": meta, **section}
        if "redis" in parts:
            log("== Redis commands per request")
            meta = section_meta(args.quick, loaded)
            section = redis_stats.run(redis_server.url, redis_server.port,
                                      requests=setting.redis_requests, log=log)
            results["redis"] = {"meta": meta, **section}
        if "flood" in parts:
            log("== flood: one client at 10x its limit, uvicorn on Redis")
            meta = section_meta(args.quick, code_state())
            section = flood.run(redis_server.url, redis_server.port,
                                rounds=setting.server_rounds,
                                seconds=setting.server_seconds,
                                warmup=setting.server_warmup_seconds, log=log)
            results["flood"] = {"meta": meta, **section}
    if "memory" in parts:
        log(f"== memory:// at scale ({setting.memory_identities:,} identities), "
            "a fresh process per strategy")
        # The children import the package again, as the servers do: their own stamp.
        meta = section_meta(args.quick, code_state())
        section = memory.run(identities=setting.memory_identities,
                             rounds=setting.memory_rounds, calls=setting.memory_calls,
                             beyond=setting.memory_beyond_cap, log=log)
        results["memory"] = {"meta": meta, **section}
    results["meta"] = run_meta(argv, time.monotonic() - started, load_before)
    results = {key: results[key] for key in ("meta", *PARTS) if key in results}

    written = write_outputs(results, args.quick)
    log("")
    log(report.markdown(results))
    for problem in report.anomalies(results):
        log(f"WARNING: {problem}")
    log("wrote " + ", ".join(str(p.relative_to(REPO)) for p in written)
        + f" in {time.monotonic() - started:.0f} s")
    return 0
