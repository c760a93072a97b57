"""Limiters on ``limits`` storages: `RateLimiter` (sync) and `AsyncRateLimiter`.

The logic of every operation lives once, in the flows of ``scripts.py`` (what to ask the
storage) and in `_Limiter` (plans, memory, errors); the two limiters only run those flows,
``run(flow, strategy)`` or ``await arun(flow, strategy)``.

Method names: the backend protocol the middlewares drive says which side it is on
(``check`` / ``acheck``, ``close`` / ``aclose``), so code that holds either limiter cannot
call the wrong one; the quota operations a user calls (``hit``, ``peek``, ``reset``,
``ping``) have one name on both, awaited on the async one, as in ``redis.asyncio``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import limits.aio.strategies
import limits.storage
import limits.strategies
from limits import RateLimitItem, parse

from .._breaker import CircuitBreaker
from .._core import Decision, Plan, PlanItem, Quota, layer_key, penalty_key
from .._flow import Flow, arun, run
from .._rules import NAMESPACE, counting
from .._strategies import Strategy, strategy_named
from ..errors import ConfigurationError, StorageError
from ..events import EventHook, StorageEventHook, storage_listener
from .batch import ScriptBatcher
from .denials import Denials
from .guards import ClusterGate, Guarded, Wrapped
from .memory import MemoryStore
from .redis import (
    KEY_PREFIX,
    RedisOptions,
    clients,
    make_storage,
    mask_url,
    memory_max_keys,
    resolve_storage_url,
    storage_errors,
)
from .scripts import ScriptPath, check_flow, peek_flow, reset_flow
from .sync_script import ScriptRunner, fits

__all__ = ["AsyncRateLimiter", "RateLimiter"]

logger = logging.getLogger("ratelimit_mw.middleware")

#: How ``hit``, ``peek`` and ``reset`` count a limit when told other than the limiter's
#: strategy: ``(strategy, burst, align, tz)``, as on `Rule`.
Counting = tuple[str | None, int | None, str | None, Any]


def _how(strategy: str | None, burst: int | None, align: str | None,
         tz: Any) -> Counting | None:
    if strategy is None and burst is None and align is None and tz is None:
        return None
    return strategy, burst, align, tz


class _Limiter:
    """What the sync and async limiters share: configuration, parsing, plans, errors."""

    #: ``limits``' strategy classes for storages without scripts.
    _limits_strategies: Any
    #: The ``limits`` storages this limiter runs on, and a hint for the other kind.
    _storage_base: type
    _storage_hint: str
    #: Whether script calls may be gathered per event-loop tick (asyncio only).
    _batches = False

    def __init__(
        self,
        storage: str | Any | None = None,
        *,
        strategy: Strategy = "fixed-window",
        redis_options: RedisOptions | None = None,
        on_event: EventHook | None = None,
        on_storage_event: StorageEventHook | None = None,
        local_denials: bool = True,
    ) -> None:
        spec = strategy_named(strategy)
        if not isinstance(local_denials, bool):
            raise ConfigurationError(f"local_denials={local_denials!r}: must be True or False")
        #: Refusals repeated without a storage call (not for memory://, local already).
        self.denials: Denials | None = None
        self.redis_options = redis_options or RedisOptions()
        self.strategy_name: Strategy = strategy
        self._errors = storage_errors()
        self._wrapped = Wrapped(self._errors, self._wrap)
        self._items: dict[str, RateLimitItem] = {}
        #: The in-process store for ``memory://``; ``None`` for every other storage.
        self.memory: MemoryStore | None = None
        self._scripts: ScriptPath | None = None
        self._batcher: ScriptBatcher | None = None
        self._runner: ScriptRunner | None = None
        self._needs_init = False
        self._settle_failing = False
        self._init_lock: asyncio.Lock | None = None
        self.strategy: Any = None
        self.storage: Any
        if isinstance(storage, str) or storage is None:
            self.url = resolve_storage_url(storage)
            if self.url.startswith("memory://"):
                self.memory = self.storage = MemoryStore(
                    strategy, max_keys=memory_max_keys(self.url))
                return
            # One key prefix per strategy: the strategies keep different Redis types under
            # the same limits key, so switching strategy must not meet the old keys.
            self.storage = make_storage(self.url, f"{KEY_PREFIX}:{strategy}",
                                        self.redis_options, asynchronous=self._batches)
        else:
            self.url = getattr(storage, "uri", None) or type(storage).__name__
            if not isinstance(storage, self._storage_base):
                raise ConfigurationError(f"storage={storage!r}: {type(self).__name__} takes "
                                         f"a URL or {self._storage_hint}")
            self.storage = storage
        # Redis storages check a whole plan in one script call; others (memcached,
        # MongoDB, ...) go through limits' strategies, one call per operation.
        self._scripts = ScriptPath.for_storage(self.storage, spec)
        if spec.limits_class is None:
            # Only our scripts know this strategy: no limits class to fall back on.
            if self._scripts is None:
                raise ConfigurationError(
                    f"strategy={strategy!r} needs memory:// or Redis through redis-py "
                    f"(a redis://, rediss://, redis+unix://, redis+cluster:// or "
                    f"redis+sentinel:// URL); {type(self.storage).__name__} cannot run "
                    f"its script: use another strategy or storage")
        else:
            limits_class = getattr(self._limits_strategies, spec.limits_class, None)
            try:
                if limits_class is None:
                    raise NotImplementedError
                self.strategy = limits_class(self.storage)
            except NotImplementedError:
                raise ConfigurationError(
                    f"strategy={strategy!r} is not supported by "
                    f"{type(self.storage).__name__}") from None
        self.denials = Denials() if local_denials else None
        self.breaker = CircuitBreaker(on_event=storage_listener(on_event, on_storage_event),
                                      name=f"rate limit storage {self.display_url}")
        self._guarded = Guarded(self.breaker, self._wrap, self.display_url)
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        self._needs_init = type(client).__name__ == "RedisCluster" and hasattr(
            client, "initialize")
        #: redis-py's async cluster raises when a node's pool is exhausted instead of
        #: waiting as the standalone BlockingConnectionPool does; the gate makes it wait.
        self._gate = ClusterGate(self.redis_options) if self._needs_init else None
        # A cluster routes each call by its key's slot: it is not batched.
        self._batcher = self._scripts.batch() if (
            self._scripts is not None and self._batches and self.redis_options.batch
            and type(self._scripts.client).__name__ == "Redis") else None
        # A sync client's checks go out on a connection kept per thread (sync_script).
        if self._scripts is not None and not self._batches and fits(self._scripts.client):
            self._runner = self._scripts.direct(self._scripts.client)

    def _flow(self, plan: Plan) -> Flow[Decision]:
        return self._scripts.flow(plan) if self._scripts else check_flow(plan)

    def _in_memory(self, memory: MemoryStore, plan: Plan, consume: bool = True) -> Decision:
        # No I/O: the sync and the async limiter both call this directly.
        if (plan.settle is None and not plan.lease) or not consume:
            quotas = memory.quotas(plan, consume=consume)
            if len(quotas) == 1:
                return Decision(quotas[0].allowed, plan, quotas)
            return Decision(all(q.allowed for q in quotas), plan, quotas)
        return memory.decision(plan, consume=consume)

    def release_nowait(self, decision: Decision) -> bool:
        """End *decision*'s lease in memory (no I/O) and return ``True``; ``False`` where
        a storage call is needed (`RateLimiter.release` / `AsyncRateLimiter.arelease`)."""
        if not decision.lease:
            return True
        if self.memory is None:
            return False
        self.memory.release(decision.plan, decision.lease)
        return True

    def _release_flow(self, decision: Decision) -> Flow[None]:
        if self._scripts is not None:
            yield from self._scripts.release_flow(decision.plan, decision.lease)

    def _release_failed(self, error: StorageError) -> None:
        # The lease times out by itself (the rule's concurrency_timeout): the slot is
        # held that long, never lost.
        logger.warning("releasing a concurrency lease failed (%s); its slot frees when "
                       "the lease times out", error)

    @property
    def can_settle(self) -> bool:
        """Whether reservations can be settled here: ``memory://`` and Redis (scripts)."""
        return self.memory is not None or self._scripts is not None

    def settle_nowait(self, decision: Decision, deltas: Sequence[int]) -> bool:
        """Settle in memory (no I/O) and return ``True``; ``False`` where a storage call
        is needed (`settle` / `asettle`)."""
        if self.memory is None:
            return False
        self.memory.settle(decision.plan, deltas, decision.token)
        return True

    def _settle_flow(self, decision: Decision, deltas: Sequence[int]) -> Flow[None]:
        if self._scripts is None or not decision.token:
            return  # nothing reserved here to settle (a fallback decided)
        yield from self._scripts.settle_flow(decision.plan, deltas, decision.token)

    def _settle_failed(self, error: StorageError) -> None:
        # Once per outage: the breaker reports the outage itself; this says what it cost.
        if not self._settle_failing:
            self._settle_failing = True
            logger.warning("settling reservations failed (%s); until the storage answers "
                           "again, reserved costs stand as charged", error)

    def _peek(self, limit: str | RateLimitItem, identifiers: tuple[str, ...],
              layer: str | None, how: Counting | None) -> Flow[Quota]:
        plan = self._plan(limit, identifiers, 1, layer, how)
        if self.memory is not None:
            return self._in_memory(self.memory, plan, consume=False).quotas[0]
        if self._scripts is not None and (self.strategy is None
                                          or plan.items[0].strategy is not None):
            return (yield from self._scripts.peek_flow(plan))  # only our scripts read it
        return (yield from peek_flow(plan.items[0]))

    def _remember(self, decision: Decision, asked: float) -> Decision:
        """*decision*, remembered when it is a refusal worth repeating locally (not for
        rules that settle or lease: a refund or a response ending elsewhere may free room
        before its retry_after)."""
        if (self.denials is not None and not decision.allowed
                and decision.plan.settle is None and not decision.plan.lease):
            self.denials.add(decision, asked)
        return decision

    def _forget_refusals(self) -> None:
        # A reset may free room that a remembered refusal says is taken: this process
        # asks the storage again. Other processes keep theirs until their retry_after.
        if self.denials is not None:
            self.denials.clear()

    def _reset(self, limit: str | RateLimitItem, identifiers: tuple[str, ...],
               layer: str | None, how: Counting | None) -> Flow[None]:
        item = self._plan(limit, identifiers, 1, layer, how).items[0]
        self._forget_refusals()
        if self.memory is not None:
            self.memory.clear_item(item)
            return
        if self._scripts is not None and (self.strategy is None or item.strategy is not None):
            yield from self._scripts.reset_flow(item)  # only our scripts know its keys
            return
        yield from reset_flow(item)

    def _penalty(self, rule: str, identity: str, clear: bool) -> Flow[float]:
        key = penalty_key(rule, identity)
        if clear:
            self._forget_refusals()
        if self.memory is not None:
            if clear:
                self.memory.clear(key)
            return self.memory.penalty(key)
        if self._scripts is None:  # no penalties without scripts (refused at set-up)
            return 0.0
        return (yield from self._scripts.penalty_flow(key, clear))

    def _item(self, limit: str | RateLimitItem) -> RateLimitItem:
        if isinstance(limit, RateLimitItem):
            return limit
        item = self._items.get(limit)
        if item is None:
            try:
                parsed = parse(limit)
            except ValueError:
                raise ConfigurationError(f"{limit!r} is not a rate limit; write e.g. "
                                         "'10/minute'") from None
            item = type(parsed)(parsed.amount, parsed.multiples, namespace=NAMESPACE)
            if len(self._items) < 1024:
                self._items[limit] = item
        return item

    def _plan(self, limit: str | RateLimitItem, identifiers: tuple[str, ...],
              cost: int, layer: str | None = None, how: Counting | None = None) -> Plan:
        if not identifiers:
            raise ConfigurationError("give at least one identifier, e.g. hit('10/minute', "
                                     "'user:42')")
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ConfigurationError(f"cost={cost!r}: must be a whole number >= 1")
        if layer is not None and (not isinstance(layer, str) or not layer):
            raise ConfigurationError(f"layer={layer!r}: give the name of a Limit, e.g. "
                                     "layer='tenant'")
        item = self._item(limit)
        strategy, option = counting(*how, [item], "hit") if how else (None, 0)
        if strategy is not None and (self.memory is None and self._scripts is None):
            raise ConfigurationError(f"strategy, burst and align need memory:// or Redis "
                                     f"(our scripts decide them); {self.display_url} has "
                                     "none")
        key = layer_key(*identifiers, name=layer)
        return Plan("/".join(identifiers), key, (PlanItem(item, key, cost, "limit",
                                                           strategy=strategy,
                                                           option=option),))

    @property
    def display_url(self) -> str:
        """The storage URL with any password replaced by ``***``: for logs and health pages."""
        return mask_url(str(self.url))

    def _wrap(self, exc: BaseException) -> StorageError:
        return StorageError(f"{type(exc).__name__}: {exc} (storage {self.display_url})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_url!r}, strategy={self.strategy_name!r})"


class RateLimiter(_Limiter):
    """A rate limiter on a sync ``limits`` storage: for WSGI, jobs, scripts.

    *storage* is a URL (``memory://``, ``redis://``, ``rediss://``, ``redis+unix://``,
    ``redis+cluster://``, ``redis+sentinel://``), ``None`` for ``$REDIS_URL`` else memory,
    or a ``limits.storage.Storage`` you built. *on_event* receives the storage's
    ``storage_down`` / ``storage_up`` events (`ratelimit_mw.events.RateLimitEvent`).

    Example::

        limiter = RateLimiter("redis://localhost:6379/0", strategy="sliding-window-counter")
        quota = limiter.hit("10/minute", "user:42")
        if not quota.allowed:
            print(f"retry in {quota.retry_after:.0f}s")

    Identifiers are escaped before they become part of a storage key, so no two tuples of
    identifiers share a counter.
    """

    _limits_strategies = limits.strategies
    _storage_base = limits.storage.Storage
    _storage_hint = ("a limits.storage.Storage (for limits.aio storages use "
                     "AsyncRateLimiter)")

    def check(self, plan: Plan) -> Decision:
        """Hit every limit of *plan* and return the decision with every quota."""
        if self.memory is not None:
            return self._in_memory(self.memory, plan)
        if self.denials is not None and (refused := self.denials.get(plan)) is not None:
            return refused
        asked = time.time() if self.denials is not None else 0.0
        with self._guarded:
            decision = run(self._flow(plan), self.strategy)
        return self._remember(decision, asked)

    def settle(self, decision: Decision, deltas: Sequence[int]) -> None:
        """Apply *deltas* (one per limit; negative: a refund) to *decision*'s reservation.

        Never raises for the storage: a settle that fails is logged once per outage and
        dropped, so a response is never failed by it.
        """
        if self.settle_nowait(decision, deltas):
            return
        try:
            with self._guarded:
                run(self._settle_flow(decision, deltas), self.strategy)
            self._settle_failing = False
        except StorageError as error:
            self._settle_failed(error)

    def release(self, decision: Decision) -> None:
        """End *decision*'s concurrency lease: its slots are free for other requests.

        Never raises for the storage: a release that fails is logged, and the lease
        times out by itself.
        """
        if self.release_nowait(decision):
            return
        try:
            with self._guarded:
                run(self._release_flow(decision), self.strategy)
        except StorageError as error:
            self._release_failed(error)

    def hit(self, limit: str | RateLimitItem, *identifiers: str, cost: int = 1,
            layer: str | None = None, strategy: str | None = None, burst: int | None = None,
            align: str | None = None, tz: Any = None) -> Quota:
        """Consume *cost* from *limit* for *identifiers*; the quota after the hit.

        *layer* names a `Limit`'s layer: ``hit("1000/hour", "/search", tenant,
        layer="tenant")`` counts where the middleware counts that layer. *strategy*,
        *burst*, *align* and *tz* count as a `Rule` with those options does
        (``hit("10/second", "user:42", burst=20)``); give a rule's own to reach its
        counters.
        """
        return self.check(self._plan(limit, identifiers, cost, layer,
                                     _how(strategy, burst, align, tz))).quotas[0]

    def peek(self, limit: str | RateLimitItem, *identifiers: str,
             layer: str | None = None, strategy: str | None = None, burst: int | None = None,
             align: str | None = None, tz: Any = None) -> Quota:
        """The quota of *limit* for *identifiers* (in *layer*, counted as `hit` says),
        without consuming it."""
        how = _how(strategy, burst, align, tz)
        with self._wrapped:
            return run(self._peek(limit, identifiers, layer, how), self.strategy)

    def reset(self, limit: str | RateLimitItem, *identifiers: str,
              layer: str | None = None, strategy: str | None = None, burst: int | None = None,
              align: str | None = None, tz: Any = None) -> None:
        """Clear the counter of *limit* for *identifiers* (in *layer*, counted as `hit`
        says)."""
        how = _how(strategy, burst, align, tz)
        with self._wrapped:
            run(self._reset(limit, identifiers, layer, how), self.strategy)

    def penalty(self, rule: str, identity: str, *, clear: bool = False) -> float:
        """Seconds left of *identity*'s penalty under *rule* (its name or template);
        *clear* ends it first. 0 when it serves none."""
        with self._wrapped:
            return run(self._penalty(rule, identity, clear), self.strategy)

    def ping(self) -> bool:
        """``True`` when the storage answers."""
        return self.memory is not None or bool(self.storage.check())

    def close(self) -> None:
        """Release the storage's connections (pools, a Sentinel's clients too)."""
        if self._runner is not None:
            self._runner.close()
        for client in clients(self.storage):
            client.close()
            pool = getattr(client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()


class AsyncRateLimiter(_Limiter):
    """A rate limiter on a ``limits.aio`` storage: for ASGI apps and asyncio code.

    Redis storages use redis-py's asyncio client (``implementation="redispy"``) with a
    blocking connection pool; nothing here blocks the event loop.

    Example::

        limiter = AsyncRateLimiter("redis://localhost:6379/0")
        quota = await limiter.hit("10/minute", "user:42")
        await limiter.aclose()

    Identifiers are escaped before they become part of a storage key, so no two tuples of
    identifiers share a counter.
    """

    _limits_strategies = limits.aio.strategies
    _storage_base = limits.aio.storage.Storage
    _storage_hint = "a limits.aio.storage.Storage (for sync storages use RateLimiter)"
    _batches = True

    async def _initialize(self) -> None:
        # redis-py's async RedisCluster routes nothing by slot until initialize() ran;
        # concurrent first commands then meet MOVED replies, and after a few of those it
        # closes connections other requests are using. Initialise once, first.
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._needs_init:
                await self.storage.bridge.storage.initialize()
                self._needs_init = False

    def check_nowait(self, plan: Plan) -> Decision | None:
        """The decision for *plan* when it needs no I/O (``memory://``), else ``None``.

        Saves the ASGI middleware a coroutine per request on memory storage.
        """
        if self.memory is not None:
            return self._in_memory(self.memory, plan)
        return None

    async def asettle(self, decision: Decision, deltas: Sequence[int]) -> None:
        """`RateLimiter.settle`, awaited: a failure is logged once per outage, dropped."""
        if self.settle_nowait(decision, deltas):
            return
        try:
            with self._guarded:
                await arun(self._settle_flow(decision, deltas), self.strategy)
            self._settle_failing = False
        except StorageError as error:
            self._settle_failed(error)

    async def arelease(self, decision: Decision) -> None:
        """`RateLimiter.release`, awaited."""
        if self.release_nowait(decision):
            return
        try:
            with self._guarded:
                await arun(self._release_flow(decision), self.strategy)
        except StorageError as error:
            self._release_failed(error)

    async def acheck(self, plan: Plan) -> Decision:
        """Hit every limit of *plan* and return the decision with every quota."""
        if self.memory is not None:
            return self._in_memory(self.memory, plan)
        if self.denials is not None and (refused := self.denials.get(plan)) is not None:
            return refused
        asked = time.time() if self.denials is not None else 0.0
        with self._guarded:
            if self._needs_init:
                await self._initialize()
            if self._gate is None:
                decision = await arun(self._flow(plan), self.strategy)
            else:
                async with self._gate:
                    decision = await arun(self._flow(plan), self.strategy)
        return self._remember(decision, asked)

    async def hit(self, limit: str | RateLimitItem, *identifiers: str, cost: int = 1,
                  layer: str | None = None, strategy: str | None = None,
                  burst: int | None = None, align: str | None = None,
                  tz: Any = None) -> Quota:
        """`RateLimiter.hit`, awaited."""
        plan = self._plan(limit, identifiers, cost, layer, _how(strategy, burst, align, tz))
        return (await self.acheck(plan)).quotas[0]

    async def peek(self, limit: str | RateLimitItem, *identifiers: str,
                   layer: str | None = None, strategy: str | None = None,
                   burst: int | None = None, align: str | None = None,
                   tz: Any = None) -> Quota:
        """`RateLimiter.peek`, awaited."""
        how = _how(strategy, burst, align, tz)
        with self._wrapped:
            return await arun(self._peek(limit, identifiers, layer, how), self.strategy)

    async def reset(self, limit: str | RateLimitItem, *identifiers: str,
                    layer: str | None = None, strategy: str | None = None,
                    burst: int | None = None, align: str | None = None,
                    tz: Any = None) -> None:
        """`RateLimiter.reset`, awaited."""
        how = _how(strategy, burst, align, tz)
        with self._wrapped:
            await arun(self._reset(limit, identifiers, layer, how), self.strategy)

    async def penalty(self, rule: str, identity: str, *, clear: bool = False) -> float:
        """`RateLimiter.penalty`, awaited."""
        with self._wrapped:
            return await arun(self._penalty(rule, identity, clear), self.strategy)

    async def ping(self) -> bool:
        """``True`` when the storage answers."""
        return self.memory is not None or bool(await self.storage.check())

    async def aclose(self) -> None:
        """Release the storage's connections (pools, a Sentinel's clients too)."""
        if self._batcher is not None:
            await self._batcher.aclose()
        for client in clients(getattr(self.storage, "bridge", None)):
            await client.aclose()
            pool = getattr(client, "connection_pool", None)
            if pool is not None:
                await pool.disconnect()
