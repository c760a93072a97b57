"""The flows that check a plan on a ``limits`` storage. No I/O: they yield operations.

`ScriptPath` is the one-round-trip check on Redis: the strategy's Lua script decides the
whole plan and returns every number the headers need. `check_flow` serves the storages
without scripts (memcached, MongoDB, ...) through ``limits``' strategies, one operation
per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import limits.aio.storage
import limits.storage
from limits.util import WindowStats

from .._core import Decision, Plan, PlanItem, Quota, item_key
from .._flow import Flow
from .._strategies import StrategySpec
from .batch import ScriptBatcher

__all__ = ["ScriptPath", "check_flow", "peek_flow", "reset_flow"]


class ScriptPath:
    """The one-round-trip check on a Redis storage of ``limits``.

    Example::

        scripts = ScriptPath.for_storage(storage, FIXED_WINDOW)
        decision = run(scripts.flow(plan), None)

    The strategy's Lua script is registered on the storage's own client (so it shares
    its pool, and redis-py reloads it after a ``NOSCRIPT``), and it is given the keys in
    the strategy's layout (``limits``' own, for the strategies ``limits`` has).
    """

    __slots__ = ("_decode", "_keys", "_prefix", "_script", "client", "runner")

    def __init__(self, client: Any, prefix: str, spec: StrategySpec) -> None:
        self.client = client
        self._script = client.register_script(spec.script)
        #: What sends one script call: the script itself, or a ScriptBatcher around it.
        self.runner: Callable[..., Any] = self._script
        self._prefix = prefix
        self._decode = spec.decode
        self._keys = spec.redis_keys

    @classmethod
    def for_storage(cls, storage: Any, spec: StrategySpec) -> ScriptPath | None:
        """The script path for *storage*, or ``None`` where it has no redis-py client."""
        try:
            from limits.aio.storage.redis.redispy import RedispyBridge
        except ImportError:  # pragma: no cover - limits without the redis bridge
            RedispyBridge = ()  # type: ignore[assignment,misc]  # noqa: N806
        if isinstance(storage, limits.storage.RedisStorage):
            if storage.target_server != "redis":
                return None
            return cls(storage.get_connection(), storage.key_prefix, spec)
        if isinstance(storage, limits.aio.storage.RedisStorage) and isinstance(
            storage.bridge, RedispyBridge
        ):
            return cls(storage.bridge.get_connection(), storage.bridge.key_prefix, spec)
        return None

    def batch(self) -> ScriptBatcher:
        """Send the calls of one event-loop tick as one pipeline (asyncio clients)."""
        batcher = ScriptBatcher(self.client, self._script)
        self.runner = batcher
        return batcher

    def flow(self, plan: Plan, *, consume: bool = True) -> Flow[Decision]:
        """One script call for the whole plan; the quotas decoded from its reply.

        With *consume* false the script only reads (a peek): nothing is admitted.
        """
        keys: list[str] = []
        args: list[int] = [len(plan.items)]
        prefix, layout = self._prefix, self._keys
        for item in plan.items:
            keys += layout(prefix, item_key(item))
            args += (item.limit.amount, item.limit.get_expiry(), item.cost)
        if not consume:
            args.append(0)
        runner = self.runner
        values = yield lambda _strategy: runner(keys=keys, args=args)
        quotas = self._decode(plan, [int(v) for v in values], time.time())
        return Decision(all(q.allowed for q in quotas), plan, quotas)

    def peek_flow(self, plan: Plan) -> Flow[Quota]:
        """The quota of *plan*'s one item read by the script, without consuming it.

        For strategies ``limits`` has no class for (it cannot read their keys).
        """
        decision = yield from self.flow(plan, consume=False)
        return decision.quotas[0]

    def reset_flow(self, item: PlanItem) -> Flow[None]:
        """Delete the Redis keys of *item*, in the strategy's layout."""
        keys = self._keys(self._prefix, item_key(item))
        client = self.client
        yield lambda _strategy: client.delete(*keys)


def check_flow(plan: Plan) -> Flow[Decision]:
    """A check through ``limits``' strategy: yields its operations, returns the decision.

    Limits are hit in order; once one refuses, the later ones are only read (not
    consumed), so a refused request costs nothing more than the limit that refused it.
    """
    quotas: list[Quota] = []
    refused = False
    for item in plan.items:
        allowed: bool | None = None
        if not refused:
            allowed = yield _hit(item)
            refused = not allowed
        stats: WindowStats = yield _stats(item)
        if allowed is None:
            allowed = stats.remaining >= item.cost
        quotas.append(_quota(item, stats, allowed))
    return Decision(not refused and all(q.allowed for q in quotas), plan, tuple(quotas))


def peek_flow(item: PlanItem) -> Flow[Quota]:
    """The quota of *item* without consuming it."""
    stats: WindowStats = yield _stats(item)
    return _quota(item, stats, max(0, int(stats.remaining)) >= item.cost)


def reset_flow(item: PlanItem) -> Flow[None]:
    """Clear the counter of *item*."""
    yield lambda strategy: strategy.clear(item.limit, item.key)


def _hit(item: PlanItem) -> Callable[[Any], Any]:
    return lambda strategy: strategy.hit(item.limit, item.key, cost=item.cost)


def _stats(item: PlanItem) -> Callable[[Any], Any]:
    return lambda strategy: strategy.get_window_stats(item.limit, item.key)


def _quota(item: PlanItem, stats: WindowStats, allowed: bool) -> Quota:
    reset_at = float(stats.reset_time)
    return Quota(allowed, item.limit, max(0, int(stats.remaining)), reset_at,
                 0.0 if allowed else max(0.0, reset_at - time.time()))
