"""The flows that check a plan on a ``limits`` storage. No I/O: they yield operations.

`ScriptPath` is the one-round-trip check on Redis: the strategy's Lua script decides the
whole plan and returns every number the headers need. `check_flow` serves the storages
without scripts (memcached, MongoDB, ...) through ``limits``' strategies, one operation
per call.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import limits.aio.storage
import limits.storage
from limits.util import WindowStats

from .._core import Decision, Penalty, Plan, PlanItem, Quota, all_allowed, item_key, penalized
from .._flow import Flow, Op
from .._strategies import KIND_NUMBERS, SCRIPT, SETTLE_SCRIPT, StrategySpec
from .._strategies.base import decode_plan, plan_marks
from .batch import ScriptBatcher
from .sync_script import ScriptRunner

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

    __slots__ = ("_kind", "_prefix", "_prefixes", "_script", "_settle", "_slot", "_spec", "client",
                 "runner")

    def __init__(self, client: Any, prefix: str, spec: StrategySpec) -> None:
        self.client = client
        self._spec = spec
        self._kind = KIND_NUMBERS[spec.name]
        # One script for every strategy: a plan may mix them (`_strategies.SCRIPT`).
        self._script = client.register_script(SCRIPT)
        self._settle = client.register_script(SETTLE_SCRIPT)
        #: What sends one script call: the script itself, a ScriptBatcher around it
        #: (asyncio) or a ScriptRunner on a connection kept per thread (sync).
        self.runner: Callable[..., Any] = self._script
        self._prefix = prefix
        #: Each strategy's key prefix: the storage's for the limiter's own strategy, so
        #: its keys stay where ``limits`` reads them; a prefix of its own for the others
        #: (`prefix_for`), since strategies keep different Redis types under one key.
        self._prefixes: dict[str, str] = {spec.name: prefix}
        #: A cluster runs a script on the node of its keys' slot: a plan whose keys span
        #: slots (limits of several identities) is decided slot by slot, `_per_slot`.
        self._slot: Callable[[bytes], int] | None = None
        if type(client).__name__ == "RedisCluster":
            from redis.crc import key_slot  # redis is installed: this is its client

            self._slot = key_slot

    def prefix_for(self, spec: StrategySpec | None) -> str:
        """The key prefix of *spec*'s keys (``None``: the limiter's strategy).

        Our URLs give the storage the prefix ``<KEY_PREFIX>:<strategy>``: another
        strategy swaps the last part, so a rule's GCRA keys are where a limiter whose
        strategy is GCRA keeps them. A storage built by hand gets ``:<strategy>`` added.
        """
        if spec is None:
            return self._prefix
        found = self._prefixes.get(spec.name)
        if found is None:
            base, _, last = self._prefix.rpartition(":")
            found = (f"{base}:{spec.name}" if base and last == self._spec.name
                     else f"{self._prefix}:{spec.name}")
            self._prefixes[spec.name] = found
        return found

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

    def direct(self, client: Any) -> ScriptRunner:
        """Send the checks on a connection of *client*'s pool kept per thread (a sync
        standalone or Sentinel client: `sync_script.fits`)."""
        runner = ScriptRunner(client, self._script)
        self.runner = runner
        return runner

    def flow(self, plan: Plan, *, consume: bool = True) -> Flow[Decision]:
        """One script call for the whole plan; the quotas decoded from its reply.

        With *consume* false the script only reads (a peek): nothing is admitted. A plan
        with a concurrency limit takes a new lease (`Decision.lease`).
        """
        lease = secrets.token_hex(8) if plan.lease else ""
        keys, args, slots = self._call(plan.items, consume, plan.penalty, lease)
        if len(slots) > 1:
            return (yield from self._per_slot(plan, slots, consume, lease))
        reply = yield _script_call(self.runner, keys, args)
        values = [int(v) for v in reply]
        at = values.pop()  # the decision's time, in Redis's clock
        held = values.pop()  # the penalty's ms left
        now = time.time()
        quotas = decode_plan(self._spec, plan, values, now)
        if held:
            return Decision(False, plan, penalized(quotas, held, now))
        allowed = all_allowed(quotas)
        if plan.settle is None and not lease:  # nothing to settle or release
            return Decision(allowed, plan, quotas)
        return Decision(allowed, plan, quotas,
                        token=plan_marks(self._spec, plan, values, at) if plan.settle else (),
                        lease=lease if allowed and consume else "")

    def settle_flow(self, plan: Plan, deltas: Sequence[int],
                    token: Sequence[int]) -> Flow[None]:
        """Apply *deltas* to the reservation of a decision (its *token*): one call per
        hash slot (one call off a cluster); limits with no delta are left out."""
        groups: dict[int, list[Any]] = {}
        slot = self._slot
        now = time.time()
        for index, (item, delta) in enumerate(zip(plan.items, deltas, strict=True)):
            if not delta:
                continue
            spec = item.strategy or self._spec
            item_keys = spec.redis_keys(self.prefix_for(item.strategy), item_key(item))
            group = groups.setdefault(0 if slot is None else slot(item_keys[0].encode()),
                                      [[], [0]])
            group[0] += item_keys
            group[1][0] += 1
            group[1] += (KIND_NUMBERS[spec.name], item.limit.amount,
                         item.limit.get_expiry(), delta, token[2 * index],
                         token[2 * index + 1], spec.argument(item, now))
        for keys, args in groups.values():
            yield _script_call(self._settle, keys, args)

    def release_flow(self, plan: Plan, lease: str) -> Flow[None]:
        """End *lease* on every concurrency limit of *plan*: the slots are free again."""
        for item in plan.items:
            if item.strategy is not None and item.strategy.unit is not None:
                name = item.strategy.redis_keys(self.prefix_for(item.strategy),
                                                item_key(item))[0]
                yield _release(self.client, name, lease)

    def peek_flow(self, plan: Plan) -> Flow[Quota]:
        """The quota of *plan*'s one item read by the script, without consuming it.

        For strategies ``limits`` has no class for (it cannot read their keys).
        """
        decision = yield from self.flow(plan, consume=False)
        return decision.quotas[0]

    def reset_flow(self, item: PlanItem) -> Flow[None]:
        """Delete the Redis keys of *item*, in its strategy's layout."""
        keys = (item.strategy or self._spec).redis_keys(self.prefix_for(item.strategy),
                                                         item_key(item))
        client = self.client
        yield lambda _strategy: client.delete(*keys)

    def penalty_flow(self, key: str, clear: bool = False) -> Flow[float]:
        """Seconds left of the penalty under *key* (the `penalty_key`); *clear* ends it."""
        name, client = f"{self._prefix}:{key}", self.client
        if clear:
            yield lambda _strategy: client.delete(name)
        ttl = yield lambda _strategy: client.pttl(name)
        return max(0, int(ttl)) / 1000

    def _call(self, items: Sequence[PlanItem], consume: bool = True,
              penalty: Penalty | None = None, lease: str = "",
              ) -> tuple[list[str], list[int | str], dict[int, list[int]]]:
        """The script's keys and arguments for *items* (see `LUA_PRELUDE`); on a cluster,
        also the positions of the items in each hash slot (else an empty dict)."""
        keys: list[str] = []
        args: list[int | str] = [len(items), int(consume)]
        args += (penalty.ms, penalty.triggers, lease) if penalty else (0, 0, lease)
        default, slot = self._spec, self._slot
        # Off a cluster nothing is grouped: the shared empty dict, never written to.
        slots: dict[int, list[int]] = {} if slot is not None else _NO_SLOTS
        now = 0.0
        for position, item in enumerate(items):
            spec = item.strategy
            if spec is None:
                item_keys = default.redis_keys(self._prefix, item_key(item))
                args += (self._kind, item.limit.amount, item.limit.get_expiry(), item.cost,
                         0)
            else:
                item_keys = spec.redis_keys(self.prefix_for(spec), item_key(item))
                if spec.timed and not now:
                    now = time.time()
                args += (KIND_NUMBERS[spec.name], item.limit.amount,
                         item.limit.get_expiry(), item.cost, spec.argument(item, now))
            if slot is not None:
                # Every key of an item carries its plan item's hash tag: one slot each.
                slots.setdefault(slot(item_keys[0].encode()), []).append(position)
            keys += item_keys
        if penalty:
            keys.append(f"{self._prefix}:{penalty.key}")
        return keys, args, slots

    def _per_slot(self, plan: Plan, slots: dict[int, list[int]],
                  consume: bool, lease: str) -> Flow[Decision]:
        """A plan across cluster slots: every slot decides without consuming first, and
        only when all have room is each consumed.

        A refusal known at the first step consumes nothing anywhere. A concurrent request
        that takes a slot's last unit between the two steps makes that slot refuse after
        the slots before it consumed: the weaker guarantee docs/scaling.md states. A
        peek (*consume* false) is the first step alone. A penalty lives in the slot of
        the rule's own identity (the first item's), and only that slot's limits send the
        identity there.
        """
        quotas: list[Quota] = []
        tokens: list[tuple[int, ...]] = [()] * len(plan.items)
        held = [0]
        found: dict[int, Quota] = {}

        def decide(positions: list[int], admit: bool) -> Flow[bool]:
            part = plan._replace(items=tuple(plan.items[i] for i in positions))
            penalty = plan.penalty if plan.penalty and positions[0] == 0 else None
            if penalty:
                penalty = penalty._replace(triggers=sum(
                    1 for i in positions if i < penalty.triggers))
            keys, args, _ = self._call(part.items, admit, penalty, lease)
            reply = yield _script_call(self.runner, keys, args)
            values = [int(v) for v in reply]
            at = values.pop()
            held[0] = max(held[0], values.pop())
            decided = decode_plan(self._spec, part, values, time.time())
            marks = plan_marks(self._spec, part, values, at)
            for number, (position, quota) in enumerate(zip(positions, decided, strict=True)):
                found[position] = quota
                tokens[position] = marks[2 * number:2 * number + 2]
            return all(q.allowed for q in decided)

        groups = list(slots.values())
        fits = True
        for positions in groups:
            fits = (yield from decide(positions, False)) and fits
        if consume and not fits and not held[0] and plan.penalty:
            box = next(positions for positions in groups if positions[0] == 0)
            if any(not found[i].allowed for i in box if i < plan.penalty.triggers):
                yield from decide(box, True)  # refused again, now into the penalty box
        if consume and fits and not held[0]:
            for positions in groups:
                if not (yield from decide(positions, True)):
                    fits = False  # the slots after it keep their dry-run quotas
                    break
        quotas = [found[i] for i in range(len(plan.items))]
        if held[0]:
            return Decision(False, plan, penalized(tuple(quotas), held[0], time.time()))
        if not fits:
            # A slot may have taken the lease before a later one refused: give it back.
            return Decision(False, plan, tuple(quotas), lease=lease if consume else "")
        return Decision(True, plan, tuple(quotas),
                        token=tuple(v for pair in tokens for v in pair), lease=lease)


_NO_SLOTS: dict[int, list[int]] = {}


def _release(client: Any, name: str, lease: str) -> Op:
    return lambda _strategy: client.zrem(name, lease)


def _script_call(runner: Callable[..., Any], keys: list[str], args: list[int | str]) -> Op:
    return lambda _strategy: runner(keys=keys, args=args)


def check_flow(plan: Plan) -> Flow[Decision]:
    """A check through ``limits``' strategy: yields its operations, returns the decision.

    Several limits are tested first and hit only when every test passes, so a refusal
    consumes nothing; a concurrent request between the tests and the hits can still make
    a later limit refuse after earlier ones were hit (these storages have no scripts to
    decide atomically). Once one refuses, the later ones are only read.
    """
    quotas: list[Quota] = []
    refused = False
    if len(plan.items) > 1:
        for item in plan.items:
            refused = refused or not (yield _test(item))
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


def _test(item: PlanItem) -> Callable[[Any], Any]:
    return lambda strategy: strategy.test(item.limit, item.key, cost=item.cost)


def _hit(item: PlanItem) -> Callable[[Any], Any]:
    return lambda strategy: strategy.hit(item.limit, item.key, cost=item.cost)


def _stats(item: PlanItem) -> Callable[[Any], Any]:
    return lambda strategy: strategy.get_window_stats(item.limit, item.key)


def _quota(item: PlanItem, stats: WindowStats, allowed: bool) -> Quota:
    reset_at = float(stats.reset_time)
    return Quota(allowed, item.limit, max(0, int(stats.remaining)), reset_at,
                 0.0 if allowed else max(0.0, reset_at - time.time()))
