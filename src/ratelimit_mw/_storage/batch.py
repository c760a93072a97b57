"""Send the script calls made during one event-loop tick as one Redis pipeline.

Under concurrency (an ASGI server with many requests in flight) every request's check is
one ``EVALSHA``. Sent one by one, each takes a connection from the pool, a write and a
read. Gathered per tick, they share one connection, one write and one read; Redis runs
them in order, each script still atomic, so every request gets exactly the answer it
would have had alone.

Gathering waits for the end of the tick. A call made while no other is waiting
on Redis does not wait: it is sent at once, as it would be without batching, so a lone
request waits for no one; the calls that arrive while it is in flight form the next
batch.
"""

from __future__ import annotations

import asyncio
import functools
import math
import sys
from collections.abc import Sequence
from typing import Any

from .resp import EvalshaPacker

if sys.version_info >= (3, 11):
    from asyncio import timeout as _deadline
else:  # pragma: no cover - redis-py depends on async-timeout before 3.11
    from async_timeout import timeout as _deadline

__all__ = ["ScriptBatcher"]

_Call = tuple[Sequence[str], Sequence[int | str], "asyncio.Future[Any]"]


class ScriptBatcher:
    """Coalesces concurrent calls of one registered script into one pipeline per tick.

    Example::

        batcher = ScriptBatcher(client, client.register_script(source))
        values = await batcher(keys=["k"], args=[1, 60, 1])

    *client* is a standalone ``redis.asyncio.Redis`` (a cluster routes per slot; it does
    not batch). A ``NOSCRIPT`` reply (Redis restarted, ``SCRIPT FLUSH``) loads the script
    and sends the failed calls again, once.
    """

    __slots__ = ("_busy", "_client", "_loop", "_pack", "_pending", "_script", "_tasks",
                 "max_batch")

    def __init__(self, client: Any, script: Any, *, max_batch: int = 256) -> None:
        self._client = client
        self._script = script
        self._pack = EvalshaPacker(script.sha, client.get_encoder())
        self._pending: list[_Call] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy = 0  # calls sent and not yet answered
        #: A bound on one pipeline's size, so a burst cannot build one huge reply.
        self.max_batch = max_batch

    async def __call__(self, *, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        """The script's reply for *keys* and *args*: sent at once when nothing is in
        flight, else with the other calls of this tick, as one pipeline."""
        if not self._pending and not self._busy:
            # Nothing in flight: no reason to wait for others.
            self._busy += 1
            try:
                return await self._alone(keys, args)
            finally:
                self._busy -= 1
        loop = asyncio.get_running_loop()
        if self._pending and self._loop is not loop:
            # Another loop's batch is open (a limiter shared across loops): go alone.
            return await self._script(keys=keys, args=args)
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            self._loop = loop
            # call_soon runs after every callback ready now: the requests that arrived
            # together have all reached this point by then.
            loop.call_soon(self._flush)
        self._pending.append((keys, args, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch or self._loop is None:
            return
        task = self._loop.create_task(self._send(batch))
        # The loop keeps only weak references to tasks: hold this one until it is done.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        self._busy += len(batch)
        try:
            # A request cancelled meanwhile (its client went away) needs no answer.
            live = [call for call in batch if not call[2].done()]
            if live:
                await self._answer(live, retry=True)
        finally:
            self._busy -= len(batch)
            # Never leave a request waiting: cancelled here means cancelled there.
            for _, _, future in batch:
                if not future.done():
                    future.cancel()

    async def _answer(self, calls: list[_Call], *, retry: bool) -> None:
        try:
            replies = await self._exchange([(keys, args) for keys, args, _ in calls])
        except Exception as exc:  # the connection failed: every call failed with it
            for _, _, future in calls:
                _settle(future, exc)
            return
        unloaded: list[_Call] = []
        for call, reply in zip(calls, replies, strict=True):
            if retry and _is_noscript(reply):
                unloaded.append(call)
            else:
                _settle(call[2], reply)
        if unloaded:
            try:
                await self._client.script_load(self._script.script)
            except Exception as exc:
                for _, _, future in unloaded:
                    _settle(future, exc)
                return
            await self._answer(unloaded, retry=False)

    async def _alone(self, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        """One call, sent at once (reloading the script after a ``NOSCRIPT``, once)."""
        (reply,) = await self._exchange([(keys, args)])
        if _is_noscript(reply):
            await self._client.script_load(self._script.script)
            (reply,) = await self._exchange([(keys, args)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _exchange(self, calls: Sequence[tuple[Sequence[str], Sequence[int | str]]],
                        ) -> list[Any]:
        """The replies to *calls*, sent as one write on one pooled connection.

        An error reply (``NOSCRIPT``, a script error) takes its call's place in the list.
        A connection that fails before any reply (the server restarted since it was
        pooled: redis-py hands it out without noticing) is replaced once.
        """
        try:
            return await self._exchange_once(calls)
        except _UnansweredError as stale:
            try:
                return await self._exchange_once(calls)
            except _UnansweredError as again:
                raise again.error from stale.error

    async def _exchange_once(self, calls: Sequence[tuple[Sequence[str], Sequence[int | str]]],
                             ) -> list[Any]:
        """One attempt of `_exchange`.

        One deadline, the connection's ``socket_timeout``, bounds the whole exchange,
        rather than redis-py's ``Pipeline``, which starts a timer per reply and runs each
        command through its retry and callback layers: on the request path that work
        shows in throughput (docs/storage.md has the measurement).
        """
        errors = _redis_errors()
        pieces: list[bytes] = []
        for keys, args in calls:
            self._pack.write(pieces, keys, args)
        pool = self._client.connection_pool
        connection = await pool.get_connection()
        replies: list[Any] = []
        try:
            try:
                async with _deadline(connection.socket_timeout):
                    await connection.send_packed_command(b"".join(pieces))
                    for _ in calls:
                        try:
                            # inf: no timer of its own, the deadline above covers it.
                            replies.append(await connection.read_response(timeout=math.inf))
                        except errors.ResponseError as error:
                            replies.append(error)
            except asyncio.TimeoutError:
                # No host in the message: a unix-socket connection has none.
                raise errors.TimeoutError(
                    f"no reply from Redis within socket_timeout={connection.socket_timeout}s"
                ) from None
        except BaseException as error:
            # Unread replies would reach the connection's next user: drop it instead.
            await connection.disconnect(nowait=True)
            if isinstance(error, errors.ConnectionError) and not replies:
                raise _UnansweredError(error) from error
            raise
        finally:
            await pool.release(connection)
        return replies

    async def aclose(self) -> None:
        """Wait for the pipelines in flight (each bounded by the socket timeout)."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _UnansweredError(Exception):
    """A connection failed before Redis answered anything: worth one new connection."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _is_noscript(result: Any) -> bool:
    return isinstance(result, _redis_errors().NoScriptError)


@functools.cache
def _redis_errors() -> Any:
    """``redis.exceptions``, looked up once rather than imported on every call of the
    request path. Lazy, because the package imports this module without redis installed."""
    import redis.exceptions

    return redis.exceptions


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
