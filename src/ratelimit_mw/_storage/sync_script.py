"""The sync check's ``EVALSHA``, written and read on a connection each thread keeps.

A WSGI worker makes one script call per request. Through redis-py's client each call
checks a connection out of the pool and back in (a lock, a fork check, a poll of the
socket, pool bookkeeping), wraps the command in its retry layer and packs it with a
packer general over every value type. None of that changes what Redis receives: here a
thread keeps one connection of the client's own pool, the command is packed for what a
check sends (keys, integers and strings), and the reply is read with redis-py's own
parser, so the reply and the errors are the ones redis-py gives.

What the checkout's poll did, the call does after the fact: a kept connection the server
closed while it was idle (a Redis restart, ``CLIENT KILL``, an idle ``timeout``) fails
on its next use, and that call is sent once more on a new socket. A ``NOSCRIPT`` reply
loads the script on the same connection and sends the call again, once.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from .batch import _redis_errors
from .resp import EvalshaPacker

__all__ = ["KeptConnections", "ScriptRunner", "fits"]


def fits(client: Any) -> bool:
    """Whether *client* can run the direct path: a sync ``redis.Redis`` (standalone or
    Sentinel) drawing on its pool, speaking RESP2, without client-side caching.

    The others keep redis-py's own path: a cluster routes by slot; a single-connection
    client shares one connection under its lock; RESP3 may interleave push messages
    (maintenance notifications, cache invalidations) that redis-py's command layer
    handles; a client-side cache wraps every connection.
    """
    import redis

    pool = getattr(client, "connection_pool", None)
    return (isinstance(client, redis.Redis) and client.connection is None
            and pool is not None and getattr(pool, "cache", None) is None
            and str(pool.connection_kwargs.get("protocol") or 2) == "2")


class _Kept:
    """What a thread's local slot holds: its connection. The slot is cleared when the
    thread ends, and this object's finalizer gives the connection back to the pool."""

    __slots__ = ("__weakref__", "connection")

    def __init__(self, connection: Any) -> None:
        self.connection = connection


class KeptConnections:
    """One connection per thread, taken from a redis-py pool and kept for later calls.

    Example::

        kept = KeptConnections(client.connection_pool)
        connection = kept.get()  # None: this thread keeps none, borrow from the pool
        ...
        kept.close()  # every kept connection back to the pool

    At most *most* connections are kept (by default half the pool's ``max_connections``),
    so the pool still serves everything else (settles, peeks, resets) and the threads
    past that number, which borrow a connection per call as redis-py does. A thread's
    connection goes back to the pool when the thread ends, or at `close`.

    Fork-safe: a child process never uses its parent's connections (their sockets are
    shared with the parent); the first call in a new process takes new ones.
    """

    __slots__ = ("_finalizers", "_local", "_lock", "_pid", "most", "pool")

    def __init__(self, pool: Any, *, most: int | None = None) -> None:
        self.pool = pool
        #: How many connections may be kept at once, over all threads.
        self.most = most if most is not None else max(1, pool.max_connections // 2)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._local = threading.local()
        # A lock of the parent may have been held at fork: the child makes its own.
        # Reentrant: a thread's slot can be freed, and its connection given back,
        # wherever that thread drops the last reference to it.
        self._lock = threading.RLock()
        #: The finalizer of each kept connection (by id): what gives it back.
        self._finalizers: dict[int, weakref.finalize[Any, Any]] = {}

    def get(self) -> Any | None:
        """This thread's connection (taken from the pool on its first call), or ``None``
        when *most* are kept already."""
        if self._pid != os.getpid():
            self._forked()
        kept: _Kept | None = getattr(self._local, "kept", None)
        if kept is not None:
            return kept.connection
        with self._lock:
            if len(self._finalizers) >= self.most:
                return None
            connection = self.pool.get_connection()
            kept = _Kept(connection)
            finalizer = weakref.finalize(kept, self._give_back, connection)
            finalizer.atexit = False  # at exit the pool is disconnected, or dies with us
            self._finalizers[id(connection)] = finalizer
        self._local.kept = kept
        return connection

    def _give_back(self, connection: Any) -> None:
        with self._lock:
            self._finalizers.pop(id(connection), None)
        self.pool.release(connection)

    def _forked(self) -> None:
        # The parent's connections are the parent's: never given back here (the pool
        # resets itself in a new process) nor shut down (redis-py closes only this
        # process's copy of a socket it did not open).
        for finalizer in self._finalizers.values():
            finalizer.detach()
        self._reset()

    def close(self) -> None:
        """Give every kept connection back to the pool; the next call takes one anew."""
        if self._pid != os.getpid():
            self._forked()
            return
        # A new slot for every thread first: none can reach a connection given back.
        slots, self._local = self._local, threading.local()
        with self._lock:
            finalizers = list(self._finalizers.values())
        for finalizer in finalizers:
            finalizer()
        del slots


class ScriptRunner:
    """Runs one registered script the way `ScriptPath` calls it, on kept connections.

    Example::

        runner = ScriptRunner(client, client.register_script(source))
        values = runner(keys=["k"], args=[1, 60, 1])
        runner.close()

    Errors are redis-py's own, raised where its client raises them: a connection error,
    a timeout, an error reply. A connection that was already open when the call began
    and fails with a connection error (the server closed it meanwhile) is replaced once;
    a new connection that fails is the storage failing, raised at once.
    """

    __slots__ = ("_closed_error", "_no_script", "_pack", "_source", "kept")

    def __init__(self, client: Any, script: Any, *, most: int | None = None) -> None:
        self.kept = KeptConnections(client.connection_pool, most=most)
        self._source = script.script
        self._pack = EvalshaPacker(script.sha, client.get_encoder())
        errors = _redis_errors()
        self._closed_error: type[Exception] = errors.ConnectionError
        self._no_script: type[Exception] = errors.NoScriptError

    def __call__(self, *, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        """The script's reply for *keys* and *args*."""
        # One piece: redis-py writes each item of what it is given with its own sendall.
        command = (self._pack(keys, args),)
        connection = self.kept.get()
        if connection is None:  # as many kept as allowed: borrow one for this call
            pool = self.kept.pool
            connection = pool.get_connection()
            try:
                return self._exchange(connection, command)
            finally:
                pool.release(connection)
        if connection.is_connected:
            try:
                return self._exchange(connection, command)
            except self._closed_error:
                pass  # redis-py disconnected it: once more, on a new socket
        # connect(), not the send's own reconnect: a Sentinel-managed connection asks the
        # sentinels where the master is now.
        connection.connect()
        return self._exchange(connection, command)

    def _exchange(self, connection: Any, command: tuple[bytes]) -> Any:
        """Send *command*, read its reply; after a ``NOSCRIPT``, load the script there
        and send it again. redis-py's connection disconnects itself on any failure, so
        no reply is ever left unread for the next call."""
        connection.send_packed_command(command)
        try:
            return connection.read_response()
        except self._no_script:
            connection.send_command("SCRIPT", "LOAD", self._source)
            connection.read_response()
            connection.send_packed_command(command)
            return connection.read_response()

    def close(self) -> None:
        """Give the kept connections back to the pool."""
        self.kept.close()

