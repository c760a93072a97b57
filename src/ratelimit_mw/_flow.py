"""The package's one sans-I/O style: flows of operations, and the two drivers that run them.

A *flow* is a generator that decides without doing I/O: it yields an operation, receives
the operation's result, and finally returns its answer. An *operation* is a callable that
takes the I/O target (a ``limits`` strategy, a cache store) and calls one of its methods;
with a sync target that returns the result, with an async one an awaitable of it. `Sleep`
is the one operation that is not a call on the target.

`run` and `arun` are the only places where a flow meets I/O, so the logic of a check, a
lookup or a store is written once and the sync and async code differ only in the
``await`` (the shape of httpx's ``auth_flow``).

Example::

    def read(name: str) -> Flow[int]:
        value = yield lambda cache: cache.get(name)
        return int(value or 0)

    run(read("hits"), cache)            # a sync cache
    await arun(read("hits"), acache)    # an async one
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from typing import Any, NamedTuple, TypeAlias, TypeVar

__all__ = ["Flow", "Op", "Sleep", "arun", "run"]

T = TypeVar("T")

#: One operation: ``op(target)`` is its result (sync target) or an awaitable (async).
Op: TypeAlias = Callable[[Any], Any]


class Sleep(NamedTuple):
    """Wait *seconds* before the flow goes on (``time.sleep`` or ``asyncio.sleep``)."""

    seconds: float


Flow: TypeAlias = Generator["Op | Sleep", Any, T]


def run(flow: Flow[T], target: Any) -> T:
    """Run *flow* against a sync *target*; its answer."""
    result: Any = None
    while True:
        try:
            op = flow.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(op, Sleep):
            time.sleep(op.seconds)
            result = None
        else:
            result = op(target)


async def arun(flow: Flow[T], target: Any) -> T:
    """Run *flow* against an async *target*, awaiting each operation; its answer."""
    result: Any = None
    while True:
        try:
            op = flow.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        result = await (asyncio.sleep(op.seconds) if isinstance(op, Sleep) else op(target))
