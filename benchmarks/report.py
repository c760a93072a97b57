"""results.json -> Markdown tables, the SVG chart, and the table in docs/benchmarks.md."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

__all__ = ["BEGIN", "END", "anomalies", "chart_svg", "markdown", "rewrite_docs"]

BEGIN = "<!-- benchmarks:results:begin (written by benchmarks/run; do not edit) -->"
END = "<!-- benchmarks:results:end -->"

APP = {"asgi": "ASGI (Starlette)", "wsgi": "WSGI (Flask)"}
DASH = "\u2013"  # en dash, for ranges and empty cells
TIMES = "\u00d7"  # multiplication sign
COLOURS = {"ratelimit-mw": "#1f6fb4", "ratelimit-mw-unbatched": "#8fb7da",
           "ratelimit-mw-noheaders": "#8fb7da", "ratelimit-mw-flood": "#1f6fb4",
           "ratelimit-mw-flood-nolocal": "#8fb7da",
           "slowapi": "#f28e2b", "asgi-ratelimit": "#59a14f",
           "flask-limiter": "#e15759", "bare": "#9d9d9d"}


def _fmt(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def _spread(s: dict[str, Any], digits: int = 1, sign: bool = False) -> str:
    """``median [min-max]`` (with an en dash)."""
    if s.get("median") is None:
        return DASH
    plus = "+" if sign and s["median"] >= 0 else ""
    if s["min"] == s["max"]:
        return f"{plus}{_fmt(s['median'], digits)}"
    return (f"{plus}{_fmt(s['median'], digits)} "
            f"[{_fmt(s['min'], digits)}{DASH}{_fmt(s['max'], digits)}]")


def _variant(name: str) -> str:
    return f"**{name}**" if name == "ratelimit-mw" else name


def _stamp(section: dict[str, Any]) -> str:
    meta = section.get("meta", {})
    commit = meta.get("commit", "?")
    dirty = meta.get("src_changes") or []
    code = f"commit `{commit}`" + (
        f" + uncommitted changes in {', '.join(f'`{f}`' for f in dirty)}" if dirty else "")
    quick = " — **quick run, not for comparison**" if meta.get("quick") else ""
    return f"_Run {meta.get('date', '?')}, {code}.{quick}_"


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "?"


def _inprocess(section: dict[str, Any]) -> list[str]:
    lines = [
        f"### In-process: µs per request (median of {section['rounds']} rounds "
        f"[min{DASH}max])", "", _stamp(section), "",
        f"| App | Storage | Variant | µs / request | {TIMES} bare | overhead over bare, µs |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in section["rows"]:
        bare = row["variant"] == "bare"
        lines.append(
            f"| {APP[row['interface']]} | {row['storage'] if not bare else DASH} "
            f"| {_variant(row['variant'])} | {_spread(row['us_per_request'])} "
            f"| {_spread(row['ratio_to_bare'], 2)} "
            f"| {DASH if bare else _spread(row['overhead_us'], 1, sign=True)} |")
    refs = section.get("references") or []
    if refs:
        lines += ["", "For scale, the storage calls alone (no app, no HTTP), µs per call:", "",
                  "| Call | µs / call |", "| --- | ---: |"]
        lines += [f"| {r['name']} | {_spread(r['us_per_call'], 2)} |" for r in refs]
    return lines


def _servers(section: dict[str, Any]) -> list[str]:
    lines = [
        f"### Under a server: requests/s and p99 (median of {section['rounds']} rounds of "
        f"`{section['wrk']}` [min{DASH}max])", "", _stamp(section), "",
        f"| Server | Storage | Variant | requests/s | {TIMES} bare | p50, ms | p99, ms "
        "| errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in section["rows"]:
        bare = row["variant"] == "bare"
        errors = row["non_2xx"] + row["socket_errors"]
        lines.append(
            f"| {row['server']} | {row['storage'] if not bare else DASH} "
            f"| {_variant(row['variant'])} | {_spread(row['rps'], 0)} "
            f"| {_spread(row['ratio_to_bare'], 2)} | {_spread(row['p50_ms'], 2)} "
            f"| {_spread(row['p99_ms'], 2)} | {errors} |")
    lines += ["", f"uvicorn: {section['uvicorn']}; gunicorn: {section['gunicorn']}. "
              "`errors` counts non-2xx responses and socket errors over all rounds."]
    return lines


def _redis(section: dict[str, Any]) -> list[str]:
    lines = [
        f"### Redis per request ({section['requests']} requests on a private "
        "redis-server)", "", _stamp(section), "",
        "| App | Variant | round trips | commands sent | commands run (incl. inside "
        "Lua) | commands run, by name | Redis µs |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in section["rows"]:
        trips = row["round_trips_per_request"]
        by_name = ", ".join(f"{k} {v:g}" for k, v in row["commands"].items())
        note = " (pipelined)" if row["pipelined"] else ""
        lines.append(
            f"| {APP[row['interface']]} | {_variant(row['variant'])} "
            f"| {_fmt(trips, 2)}{note} | {_fmt(row['sent_per_request'], 2)} "
            f"| {_fmt(row['commands_per_request'], 2)} | {by_name} "
            f"| {_fmt(row.get('server_us_per_request'), 1)} |")
    lines += ["", "Per request. *Redis µs*: the server's own time (`INFO commandstats` usec) "
              "for the commands the client sent, a script's time including its calls."]
    return lines


def _flood(section: dict[str, Any]) -> list[str]:
    lines = [
        f"### Flood: one client at 10{TIMES} its limit, uvicorn on Redis (median of "
        f"{section['rounds']} rounds of {section['seconds']} s [min{DASH}max])", "",
        _stamp(section), "",
        f"The bare app served {section['bare_capacity_rps']:,.0f} req/s before the rounds; "
        f"the limit is a tenth of that, `{section['per_second']}/second`.", "",
        "| Variant | req/s | ÷ bare | p99 ms | refused | script calls per refused request |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in section["rows"]:
        calls = row["script_calls_per_refused"]
        lines.append(
            f"| {_variant(row['variant'])} | {_spread(row['rps'], 0)} "
            f"| {_spread(row['ratio_to_bare'], 2)} | {_spread(row['p99_ms'], 2)} "
            f"| {_spread(row['refused_share'], 2)} "
            f"| {DASH if calls is None else _spread(calls, 2)} |")
    lines += ["", "*refused*: the share of 429s. *Script calls per refused request*: "
              "`EVALSHA` calls (`INFO commandstats`) less one per allowed request, over "
              "the refused requests; `-nolocal` is `local_denials=False`."]
    return lines


def _mb(value: float) -> str:
    return f"{value / 1e6:,.1f}"


def _memory(section: dict[str, Any]) -> list[str]:
    n = f"{section['identities']:,}"
    cap = f"{section['max_keys']:,}"
    lines = [
        f"### `memory://` at scale: {n} identities (µs: median of {section['rounds']} "
        f"rounds [min{DASH}max])", "", _stamp(section), "",
        f"| Strategy | bytes / identity | RSS at the default cap ({cap} identities), MB "
        f"| past the cap, bytes / new identity | µs / hit, 1 key | µs / hit, {n} keys "
        f"| {n} keys ÷ 1 key |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in section["rows"]:
        cap_row = row["default_cap"]
        lines.append(
            f"| {row['strategy']} | {row['bytes_per_identity']:,.0f} "
            f"| {_mb(cap_row['rss_growth_at_cap'])} "
            f"| {cap_row['rss_growth_past_cap'] / cap_row['beyond']:,.0f} "
            f"| {_spread(row['us_per_hit_1_key'], 2)} | {_spread(row['us_per_hit_n_keys'], 2)} "
            f"| {_spread(row['ratio'], 2)} |")
    lines += ["", f"RSS: growth of a fresh process's {section['rss_source']} (MB = 10⁶ bytes) "
              f"as each identity makes one `hit(\"{section['fill_limit']}\", identity)`"
              f"{_fill_exceptions(section)} on "
              f"`RateLimiter(\"{section['scale_url']}\")`, or on `memory://` (default cap) "
              f"for {cap} identities, then {section['beyond']:,} more. µs: "
              f"`hit(\"{section['probe_limit']}\", \"probe\")` of one identity "
              f"({section['calls_per_round']:,} calls a round), on a store holding it alone "
              f"and on the filled one, alternating. This part took {section['seconds']:.0f} s; "
              f"load average {_load(section.get('load_average_before'))} before, "
              f"{_load(section.get('load_average_after'))} after."]
    return lines


def _fill_exceptions(section: dict[str, Any]) -> str:
    # A results file without them used fill_limit for every strategy.
    limits = section.get("fill_limits") or {}
    return "".join(f" (`\"{limit}\"` for {strategy}: a GCRA key lives window / amount "
                   "per hit)" for strategy, limit in limits.items())


def anomalies(results: dict[str, Any]) -> list[str]:
    """Every measurement that saw something other than a 200: it must not pass unnoticed."""
    found = []
    for key in ("inprocess", "redis"):
        for row in results.get(key, {}).get("rows", []):
            other = {k: v for k, v in row.get("statuses", {}).items() if k != "200"}
            if other:
                found.append(f"{key} {row['interface']}/{row.get('storage', 'redis')}/"
                             f"{row['variant']}: statuses {other}")
    for row in results.get("servers", {}).get("rows", []):
        if row["non_2xx"] or row["socket_errors"]:
            found.append(f"servers {row['server']}/{row['storage']}/{row['variant']}: "
                         f"{row['non_2xx']} non-2xx, {row['socket_errors']} socket errors")
    for row in results.get("memory", {}).get("rows", []):
        # Every identity and the repeated one, all the while the hits were timed; and no
        # more than the cap and its overflow counter in a store at its default cap.
        if row["live_keys"] != [row["identities"] + 1] * 2:
            found.append(f"memory {row['strategy']}: the store held {row['live_keys']} keys "
                         f"while timed, not {row['identities'] + 1}")
        cap = row["default_cap"]
        if cap["live_keys_past_cap"] > cap["max_keys"] + 1:
            found.append(f"memory {row['strategy']}: {cap['live_keys_past_cap']} keys past "
                         f"a cap of {cap['max_keys']}")
    return found


def markdown(results: dict[str, Any]) -> str:
    """The generated part of docs/benchmarks.md."""
    meta = results.get("meta", {})
    lines = [
        f"Machine: {meta.get('cpu', '?')}, {meta.get('cpus', '?')} CPUs, Python "
        f"{meta.get('python', '?')}, Redis {meta.get('redis_server', '?')}, "
        f"{str(meta.get('wrk', '?')).split(' Copyright')[0]}. "
        f"Last run took {meta.get('seconds', 0):.0f} s "
        f"(`{meta.get('command', 'benchmarks/run')}`); load average "
        f"{_load(meta.get('load_average_before'))} before, "
        f"{_load(meta.get('load_average_after'))} after.", "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
        + ".", "",
        "![Ratios to the bare app](benchmarks.svg)", "",
    ]
    problems = anomalies(results)
    if problems:
        lines += ["**Anomalies in this run** (the numbers below include them):", "",
                  *[f"- {p}" for p in problems], ""]
    for key, render in (("inprocess", _inprocess), ("servers", _servers),
                        ("redis", _redis), ("flood", _flood), ("memory", _memory)):
        if key in results:
            lines += [*render(results[key]), ""]
    return "\n".join(lines).rstrip() + "\n"


def rewrite_docs(path: Path, generated: str) -> None:
    """Replaces what is between the markers in *path* (which must have them)."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise RuntimeError(f"{path} has no {BEGIN!r} ... {END!r} markers")
    path.write_text(pattern.sub(lambda _m: f"{BEGIN}\n{generated}{END}", text),
                    encoding="utf-8")


# --------------------------------------------------------------------------- chart

_LABEL_W = 250
_BAR_W = 420
_ROW_H = 20
_WIDTH = _LABEL_W + _BAR_W + 70


def _panel(title: str, note: str, rows: list[tuple[str, str, dict[str, Any]]],
           y: int, reference: float | None) -> tuple[list[str], int]:
    """A horizontal bar chart: (label, variant, summary) per row, whiskers min-max."""
    out = [f'<text x="10" y="{y + 16}" class="title">{html.escape(title)}</text>',
           f'<text x="10" y="{y + 32}" class="note">{html.escape(note)}</text>']
    y += 44
    values = [s["max"] for _, _, s in rows if s.get("max") is not None]
    top = max([*values, reference or 0.0, 1e-9]) * 1.1

    def x(v: float) -> float:
        return float(_LABEL_W + _BAR_W * v / top)

    for i, (label, variant, s) in enumerate(rows):
        ry = y + i * _ROW_H
        out.append(f'<text x="{_LABEL_W - 6}" y="{ry + 14}" class="label">'
                   f'{html.escape(label)}</text>')
        if s.get("median") is None:
            continue
        colour = COLOURS.get(variant, "#777")
        out.append(f'<rect x="{_LABEL_W}" y="{ry + 3}" width="{x(s["median"]) - _LABEL_W:.1f}" '
                   f'height="{_ROW_H - 6}" fill="{colour}"/>')
        if s["min"] != s["max"]:
            mid = ry + _ROW_H / 2
            out.append(f'<line x1="{x(s["min"]):.1f}" y1="{mid}" x2="{x(s["max"]):.1f}" '
                       f'y2="{mid}" class="whisker"/>')
        out.append(f'<text x="{x(s["max"]) + 4:.1f}" y="{ry + 14}" class="value">'
                   f'{s["median"]:.2f}</text>')
    bottom = y + len(rows) * _ROW_H
    if reference is not None:
        out.append(f'<line x1="{x(reference):.1f}" y1="{y}" x2="{x(reference):.1f}" '
                   f'y2="{bottom}" class="ref"/>')
        out.append(f'<text x="{x(reference):.1f}" y="{bottom + 12}" class="reflabel">'
                   f'bare = {reference:g}</text>')
    return out, bottom + 24


def chart_svg(results: dict[str, Any]) -> str:
    """Ratios to the bare app (in-process and under servers) and Redis round trips."""
    body: list[str] = []
    y = 6
    for storage in ("memory", "redis"):
        if "inprocess" not in results:
            break
        rows = [(f"{r['interface'].upper()} · {r['variant']}", r["variant"],
                 r["ratio_to_bare"]) for r in results["inprocess"]["rows"]
                if r["storage"] == storage]
        part, y = _panel(f"In-process, {storage} storage: time per request ÷ bare app "
                         "(lower is better)",
                         f"median of rounds, whisker = min{DASH}max; the bare app's time "
                         "is the same on both storages", rows, y, 1.0)
        body += part
    if "servers" in results:
        rows = [(f"{r['server']} {r['storage']} · {r['variant']}", r["variant"],
                 r["ratio_to_bare"]) for r in results["servers"]["rows"]
                if r["variant"] != "bare"]
        part, y = _panel("Under a server: requests/s ÷ bare app (higher is better)",
                         f"{results['servers']['wrk']}, loopback", rows, y, 1.0)
        body += part
    if "redis" in results:
        rows = []
        for r in results["redis"]["rows"]:
            trips = r["round_trips_per_request"]
            value = {"median": trips, "min": trips, "max": trips}
            rows.append((f"{r['interface'].upper()} · {r['variant']}", r["variant"], value))
        part, y = _panel("Redis round trips per request (lower is better)",
                         "client socket writes / requests", rows, y, None)
        body += part
    style = (
        "text{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;fill:#222}"
        ".title{font-size:14px;font-weight:600}.note{font-size:11px;fill:#666}"
        ".label{font-size:12px;text-anchor:end}.value{font-size:11px}"
        ".whisker{stroke:#222;stroke-width:1.5}.ref{stroke:#222;stroke-dasharray:4 3}"
        ".reflabel{font-size:10px;fill:#444;text-anchor:middle}"
    )
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{y}" '
            f'viewBox="0 0 {_WIDTH} {y}" role="img">\n'
            f'<title>ratelimit-mw benchmarks: ratios to the bare app</title>\n'
            f'<style>{style}</style>\n<rect width="100%" height="100%" fill="#fff"/>\n'
            + "\n".join(body) + "\n</svg>\n")
