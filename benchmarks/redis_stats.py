"""Redis commands and round trips per request, on a private server nobody else uses.

For each variant on Redis: warm up, ``CONFIG RESETSTAT``, N requests in-process, then
``INFO commandstats``. Three numbers per request:

- **commands**: every call in ``INFO commandstats``, including the ones a Lua script makes
  (``redis.call`` inside EVAL/EVALSHA is counted there too), grouped by command;
- **sent**: the commands the client itself sent, from ``MONITOR`` (where calls made by a
  script show as ``[db lua]`` and are left out);
- **server µs**: Redis's own time (commandstats ``usec``) for the commands the client
  sent; a script's time includes the calls it makes;
- **round trips**: the client's writes to its sockets, counted by wrapping redis-py's
  ``send_packed_command`` (sync and asyncio): a pipeline or MULTI/EXEC block is several
  commands sent but one round trip. All the libraries measured here use redis-py; a
  client that does not would show ``None``.

Nothing here assumes how many commands a library sends: it is all measured at run time.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .apps import Built, build_asgi, build_wsgi
from .drivers import run_asgi, run_wsgi
from .inprocess import Config, configs, storage_url

__all__ = ["count_round_trips", "run"]

Log = Callable[[str], None]
# Commands this module sends itself, never counted against a library.
_OURS = {"config|resetstat", "monitor", "echo", "info"}
_MONITOR_LINE = re.compile(r'^\+\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]*)"')


class _Counter:
    def __init__(self) -> None:
        self.writes = 0


@contextmanager
def count_round_trips() -> Iterator[_Counter]:
    """Counts redis-py's socket writes (one per command, one per pipeline) while active."""
    import redis.asyncio.connection
    import redis.connection

    counter = _Counter()
    sync_cls: Any = redis.connection.AbstractConnection
    async_cls: Any = redis.asyncio.connection.AbstractConnection
    sync_send = sync_cls.send_packed_command
    async_send = async_cls.send_packed_command

    def counted_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.writes += 1
        return sync_send(self, *args, **kwargs)

    async def counted_async(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.writes += 1
        return await async_send(self, *args, **kwargs)

    sync_cls.send_packed_command = counted_sync
    async_cls.send_packed_command = counted_async
    try:
        yield counter
    finally:
        sync_cls.send_packed_command = sync_send
        async_cls.send_packed_command = async_send


class _Monitor:
    """A raw ``MONITOR`` connection read by a thread; counts commands per source."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: Counter[str] = Counter()
        self.in_scripts: Counter[str] = Counter()
        self._sentinel = f"rlmw-bench-{id(self)}"
        self._seen_sentinel = threading.Event()
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._sock.sendall(b"MONITOR\r\n")
        if not self._sock.recv(5).startswith(b"+OK"):
            raise RuntimeError("MONITOR was refused")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while not self._seen_sentinel.is_set():
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                self._count(line.decode("utf-8", "replace"))

    def _count(self, line: str) -> None:
        match = _MONITOR_LINE.match(line)
        if match is None:
            return
        source, command = match.group(1), match.group(2).lower()
        if command == "echo" and self._sentinel in line:
            self._seen_sentinel.set()
        elif source == "lua":
            self.in_scripts[command] += 1
        elif command not in _OURS:
            self.sent[command] += 1

    def stop(self, command: Callable[..., Any]) -> None:
        """Waits until every command sent before now has been read, then closes."""
        command("ECHO", self._sentinel)
        if not self._seen_sentinel.wait(10):
            raise RuntimeError("MONITOR did not show the sentinel within 10 s")
        self._sock.close()
        self._thread.join(5)


def _commandstats(info: dict[str, Any]) -> tuple[Counter[str], Counter[str]]:
    """Calls and microseconds per command name, without this module's own commands."""
    calls: Counter[str] = Counter()
    usec: Counter[str] = Counter()
    for key, value in info.items():
        if key.startswith("cmdstat_"):
            name = key.removeprefix("cmdstat_")
            if name not in _OURS:
                calls[name] = int(value["calls"])
                usec[name] = int(value["usec"])
    return calls, usec


def _per_request(counter: Counter[str], n: int) -> dict[str, float]:
    return {k: round(v / n, 3) for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))}


def _measure(config: Config, built: Built, port: int, n: int,
             loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    import redis

    control: Any = redis.Redis(host="127.0.0.1", port=port)
    statuses: Counter[int] = Counter()
    try:
        def requests(count: int) -> None:
            if config.interface == "asgi":
                loop.run_until_complete(run_asgi(built.app, count, statuses))
            else:
                run_wsgi(built.app, count, statuses)

        requests(20)  # connections made, scripts loaded: not what a request costs
        statuses.clear()
        control.config_resetstat()
        monitor = _Monitor(port)
        with count_round_trips() as trips:
            requests(n)
        monitor.stop(control.execute_command)
        stats, usec = _commandstats(control.info("commandstats"))
    finally:
        control.close()
    total = sum(stats.values())
    sent = sum(monitor.sent.values())
    round_trips = trips.writes / n if trips.writes else None
    return {
        "interface": config.interface,
        "variant": config.variant,
        "requests": n,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "commands_per_request": total / n,
        "commands": _per_request(stats, n),
        "sent_per_request": sent / n,
        "sent": _per_request(monitor.sent, n),
        "in_scripts_per_request": sum(monitor.in_scripts.values()) / n,
        # Redis's own time for what the client sent (a script's usec include its calls).
        "server_us_per_request": sum(usec[name] for name in monitor.sent) / n,
        "round_trips_per_request": round_trips,
        "pipelined": round_trips is not None and round_trips < sent / n,
    }


def run(redis_url: Callable[[int], str], port: int, *, requests: int,
        log: Log = print) -> dict[str, Any]:
    """The section ``redis`` of results.json."""
    loop = asyncio.new_event_loop()
    rows = []
    try:
        for config in configs(("redis",)):
            if config.variant == "bare":
                continue
            build = build_asgi if config.interface == "asgi" else build_wsgi
            built = build(config.variant, storage_url(config, redis_url))
            try:
                rows.append(_measure(config, built, port, requests, loop))
            finally:
                if config.interface == "asgi":
                    loop.run_until_complete(built.aclose())
                else:
                    built.close()
            row = rows[-1]
            log(f"  redis {config.name}: {row['commands_per_request']:.2f} commands, "
                f"{row['sent_per_request']:.2f} sent, "
                f"{row['round_trips_per_request']} round trips per request")
    finally:
        loop.close()
    return {"requests": requests, "rows": rows}
