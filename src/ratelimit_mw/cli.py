"""The ``ratelimit-mw`` command: check a Redis connection, inspect and reset quotas, show
the effective configuration, serve the demo.

Example::

    $ ratelimit-mw check --redis-url redis://localhost:6379/0
    $ ratelimit-mw inspect --rule /login --identity ip:203.0.113.7
    $ ratelimit-mw config --config ratelimit.toml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ._rules import Limit, compile_template, parse_layers, parse_limits
from ._storage.limiter import RateLimiter
from ._storage.redis import RedisOptions, mask_url, resolve_storage_url
from .config import TIER, Settings, load_settings
from .errors import ConfigurationError, RateLimitMWError

__all__ = ["main"]


class Report:
    """Prints each step as it runs (the progress indicator) and what to do on failure."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = False

    def step(self, title: str, action: Callable[[], str]) -> bool:
        self.out.write(f"  {title} ... ")
        self.out.flush()
        try:
            detail = action()
        except Exception as error:  # every failure becomes advice, never a traceback
            self.failed = True
            self.out.write(f"FAILED\n    {type(error).__name__}: {error}\n")
            if not isinstance(error, ConfigurationError):  # its message says what to do
                self.out.write(f"    -> {advice(error)}\n")
            return False
        self.out.write(f"ok{f' ({detail})' if detail else ''}\n")
        return True


def advice(error: BaseException) -> str:
    """What an operator should check for *error*."""
    text = f"{type(error).__name__} {error}".lower()
    if "refused" in text or "errno 111" in text or "connect call failed" in text:
        return ("nothing is listening there: is Redis running? Inside Docker use the "
                "service name (redis://redis:6379/0), not localhost")
    if "can't run this command" in text or "no permissions" in text:
        return ("the ACL user may not run what the limiter needs: grant it "
                "~rlmw:* +@read +@write +@scripting +ping +info +time")
    if any(word in text for word in ("auth", "wrongpass", "password", "noperm")):
        return ("Redis wants credentials: put them in the URL, redis://:PASSWORD@host:6379/0 "
                "(or redis://USER:PASSWORD@... for an ACL user)")
    if "readonly" in text or "read only" in text:
        return ("this server is a read-only replica: point the URL at the master, or use "
                "redis+sentinel://host:26379/<service>")
    if "name or service not known" in text or "nodename nor servname" in text or (
            "temporary failure in name resolution" in text):
        return "the host name does not resolve: check the spelling and your DNS"
    if "timeout" in text or "timed out" in text:
        return ("no answer in time: check the host, the network and firewalls (is the port "
                "open?), or raise --timeout")
    if "ssl" in text or "certificate" in text:
        return "TLS failed: check rediss:// against the server's TLS port and certificates"
    return "see the error above; `redis-cli -u URL ping` checks the same connection by hand"


def _client(limiter: RateLimiter) -> Any:
    return limiter.storage.get_connection()


def check(url: str | None, timeout: float, out: TextIO) -> int:
    report = Report(out)
    url = url or os.environ.get("REDIS_URL")
    out.write("ratelimit-mw check\n")
    if not url:
        out.write("  no Redis URL: pass --redis-url or set REDIS_URL\n")
        return 2
    try:
        url = resolve_storage_url(url)
    except ConfigurationError as error:
        out.write(f"  {error}\n")
        return 2
    if url.startswith("memory://"):
        out.write("  memory:// needs no connection: nothing to check\n")
        return 0
    out.write(f"  url: {mask_url(url)}\n")
    state: dict[str, Any] = {}
    options = RedisOptions(socket_timeout=timeout, socket_connect_timeout=timeout,
                           pool_timeout=timeout)

    def connect() -> str:
        state["limiter"] = RateLimiter(url, redis_options=options)
        return ""

    def ping() -> str:
        client = _client(state["limiter"])
        started = time.perf_counter()
        if not client.ping():
            raise RateLimitMWError("PING did not answer PONG")
        return f"{(time.perf_counter() - started) * 1000:.1f} ms"

    def server() -> str:
        info = _client(state["limiter"]).info("server")
        if "redis_version" not in info:  # a cluster client answers per node
            info = next(iter(info.values()))
        mode = "sentinel" if "sentinel" in url.split("://", 1)[0] else info.get(
            "redis_mode", "standalone")
        return f"Redis {info.get('redis_version', '?')}, {mode}"

    def json_round_trip() -> str:
        client = _client(state["limiter"])
        key = f"rlmw:check:{uuid.uuid4().hex}"
        value = {"check": "ratelimit-mw", "at": time.time()}
        client.set(key, json.dumps(value), ex=30)
        try:
            if json.loads(client.get(key)) != value:
                raise RateLimitMWError("read back something else than was written")
        finally:
            client.delete(key)
        return "set, get, delete"

    def limiter_round_trip() -> str:
        limiter: RateLimiter = state["limiter"]
        scratch = uuid.uuid4().hex
        try:
            if limiter.hit("5/minute", "rlmw-check", scratch).remaining != 4:
                raise RateLimitMWError("a hit on a fresh key did not leave 4 of 5")
            if limiter.peek("5/minute", "rlmw-check", scratch).remaining != 4:
                raise RateLimitMWError("reading the key back gave another count")
        finally:
            limiter.reset("5/minute", "rlmw-check", scratch)
        if limiter.peek("5/minute", "rlmw-check", scratch).remaining != 5:
            raise RateLimitMWError("clearing the key did not reset the count")
        return "hit, read, clear"

    steps = [("connect", connect), ("PING", ping), ("server", server),
             ("JSON set/get/delete", json_round_trip),
             ("limiter hit/read/clear", limiter_round_trip)]
    try:
        for title, action in steps:
            if not report.step(title, action):
                break
    finally:
        if "limiter" in state:
            state["limiter"].close()
    out.write("all checks passed\n" if not report.failed else "check FAILED\n")
    return 1 if report.failed else 0


def _find_rule(settings: Settings, rule: str
               ) -> tuple[str, tuple[Limit, ...], dict[str, Any]] | None:
    """The counter name, the layers and how the rule named (or templated) *rule* in
    *settings* counts (its ``strategy``, ``burst``, ``align`` and ``tz``, as the
    limiters' ``peek`` and ``reset`` take them); ``None`` when there is no such rule.

    *rule* is compared with each rule's name and its normalised template (a path is
    normalised first, so ``/login`` finds a rule written ``/login/``). The counter is the
    one the middleware writes: the rule's *name*, else its normalised template, even
    when a named rule is looked up by its path. ``global`` (when no rule has that name)
    is the global limits, whose counters belong to no rule.
    """
    # Limits chosen per request (tiers) are not known here: --limit names them.
    default = () if settings.default_limits == TIER else parse_layers(
        settings.default_limits, "default_limits")
    if rule == "default":
        return "default", default, {}
    wanted = {rule}
    if rule.startswith("/"):
        with contextlib.suppress(ConfigurationError):
            wanted.add(compile_template(rule)[0])
    for entry in settings.rule_objects():
        compiled = entry.compiled
        if wanted & {compiled.name, compiled.template}:
            how = {"strategy": entry.strategy, "burst": entry.burst, "align": entry.align,
                   "tz": entry.tz}
            return (compiled.name, () if compiled.exempt else (compiled.layers or default),
                    how)
    if rule == "global":
        return "", parse_layers(settings.middleware_options()["global_limits"],
                                "global_limits"), {}
    return None


def _limiter_for(args: argparse.Namespace, settings: Settings) -> RateLimiter:
    return RateLimiter(args.storage or settings.storage,
                       strategy=args.strategy or settings.strategy,
                       redis_options=settings.redis_options())


def inspect(args: argparse.Namespace, settings: Settings, out: TextIO, *,
            clear: bool = False) -> int:
    found = _find_rule(settings, args.rule)
    counter = found[0] if found else args.rule
    how = found[2] if found else {}
    # A layer is one of the rule's Limits, by name; without --layer, its unnamed one.
    layer = next((limit for limit in (found[1] if found else ())
                  if limit.name == args.layer), None)
    known = layer.items if layer is not None else ()
    items = parse_limits(args.limit, "--limit") if args.limit else known
    if not items:
        if args.layer:
            out.write(f"no limits known for rule {args.rule!r} layer {args.layer!r}: pass "
                      "--limit, or --layer with the name of one of the rule's Limits\n")
        else:
            out.write(f"no limits known for rule {args.rule!r}: pass --limit, or a "
                      "--config that has the rule\n")
        return 2
    limiter = _limiter_for(args, settings)
    try:
        for item in items:
            if clear:
                limiter.reset(item, counter, args.identity, layer=args.layer, **how)
            quota = limiter.peek(item, counter, args.identity, layer=args.layer, **how)
            reset_in = max(0.0, quota.reset_at - time.time())
            out.write(f"{args.rule} {item!r} for {args.identity}: {quota.remaining}/"
                      f"{item.amount} left, resets in {reset_in:.0f}s"
                      f"{' (cleared)' if clear else ''}\n")
        if args.layer is None:
            # The rule's penalty box for the identity, if it serves one.
            held = limiter.penalty(counter, args.identity)
            if held:
                if clear:
                    limiter.penalty(counter, args.identity, clear=True)
                out.write(f"{args.rule} penalty for {args.identity}: {held:.0f}s left"
                          f"{' (cleared)' if clear else ''}\n")
    finally:
        limiter.close()
    return 0


def show_config(settings: Settings, out: TextIO) -> int:
    out.write(json.dumps(settings.describe(), indent=2, default=str) + "\n")
    return 0


def demo(host: str, port: int, out: TextIO) -> int:
    try:
        import uvicorn
    except ImportError:
        out.write("the demo needs uvicorn: pip install uvicorn\n")
        return 2
    from ._demo import build_demo, usage

    out.write(usage(f"http://{host}:{port}"))
    out.flush()
    uvicorn.run(build_demo(), host=host, port=port, log_level="info")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ratelimit-mw",
        description="Operate ratelimit-mw: check Redis, inspect and reset quotas, show the "
                    "configuration, run the demo.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check_cmd = commands.add_parser("check", help="verify a Redis connection end to end")
    check_cmd.add_argument("--redis-url", help="default: $REDIS_URL")
    check_cmd.add_argument("--timeout", type=float, default=2.0,
                           help="seconds per network step (default 2)")

    for name, text in (("inspect", "show the quota of a rule and identity"),
                       ("reset", "clear the quota of a rule and identity")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--rule", required=True,
                         help="rule name or path template; 'default' for default_limits")
        sub.add_argument("--identity", required=True,
                         help="the key function's identity, e.g. ip:203.0.113.7")
        sub.add_argument("--layer", help="the name of one of the rule's Limits, e.g. "
                         "tenant (default: its unnamed limits)")
        sub.add_argument("--limit", help="e.g. 5/minute (default: the rule's limits from "
                                         "the configuration)")
        sub.add_argument("--storage", help="storage URL (default: configuration, REDIS_URL)")
        sub.add_argument("--strategy", help="default: the configuration's")
        sub.add_argument("--config", help="TOML file (default: $RATELIMIT_CONFIG)")

    config_cmd = commands.add_parser("config", help="print the effective configuration, "
                                                    "secrets masked")
    config_cmd.add_argument("--config", help="TOML file (default: $RATELIMIT_CONFIG)")
    config_cmd.add_argument("--app", metavar="MODULE:APP",
                            help="list the routes of this app with the limits that apply "
                                 "to each, and the rules that match no route")

    demo_cmd = commands.add_parser("demo", help="serve a demo app behind the middleware "
                                                "(memory storage)")
    demo_cmd.add_argument("--host", default="127.0.0.1")
    demo_cmd.add_argument("--port", type=int, default=8000)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            return check(args.redis_url, args.timeout, out)
        if args.command == "demo":
            return demo(args.host, args.port, out)
        settings = load_settings(args.config)
        if args.command == "config":
            if args.app:
                from ._options import MiddlewareOptions
                from ._routes_report import report_routes

                return report_routes(args.app, out,
                                     MiddlewareOptions(**settings.middleware_options()))
            return show_config(settings, out)
        return inspect(args, settings, out, clear=args.command == "reset")
    except RateLimitMWError as error:  # configuration and storage errors, said plainly
        out.write(f"error: {error}\n")
        if not isinstance(error, ConfigurationError):
            out.write(f"  -> {advice(error)}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
