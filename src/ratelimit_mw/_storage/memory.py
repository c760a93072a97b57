"""In-process counters with the semantics of the Redis scripts. No I/O.

Why not ``limits``' own memory storages: their async one walks every key on every
expiry tick, their sync moving window keeps expired entries, and a check there takes two
operations per limit. This store answers a whole plan in one call, in the same integers the
strategy's Lua script returns (its decoder reads both), so memory and Redis decide alike:
all-or-nothing over the limits of a request, refused requests never consume.

Memory is per process: with several workers each keeps its own counters, so a limit of
100/minute lets up to ``100 * workers`` through. Use Redis when that matters.

Bounded under attack: at most ``max_keys`` counters. Past the cap, an identity that has no
counter yet is counted in one overflow counter per limit, shared by every such identity:
stricter than its own counter would be, never looser, so the cap can refuse more but never
admit more than a limit allows. Expired counters are dropped a bounded batch at a time,
so no request pays for expiring a whole second of keys.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._core import Decision, Plan, PlanItem, Quota, all_allowed, item_key, limit_key, penalized
from .._strategies import KINDS, Strategy, strategy_named
from .._strategies.base import MemoryAlgorithm, decide_in_memory, decode_plan, plan_marks
from ..errors import ConfigurationError

__all__ = ["DEFAULT_MAX_KEYS", "EXPIRE_BATCH", "MemoryStore"]

#: Counters one store keeps at most (see the module's docstring for what happens past it).
DEFAULT_MAX_KEYS = 100_000
#: Expired counters one check drops at most.
EXPIRE_BATCH = 1000
#: The identity of the overflow counters: a storage key can never contain '%o' (every '%'
#: of an escaped identity starts a hex escape), so no client's counter is one of them.
_OVERFLOW = "{%overflow}"
#: Separates a strategy's name from the key of a limit of a plan item that names its
#: strategy: the entries of different strategies have different shapes, and the expiry
#: sweep must know which strategy reads an entry. ``limits`` keys never contain it.
_KIND = "\x00"


class MemoryStore:
    """Counters keyed like the Redis keys, expired in O(1) amortised.

    Example::

        store = MemoryStore("fixed-window")
        decision = store.decision(plan)     # one Quota per plan item, as from Redis

    *strategy* decides the plan items that name none (`PlanItem.strategy`). Expired keys
    are released: every key is filed under the second it expires in, and each check
    first drops the keys of the seconds that have passed, re-filing those whose expiry
    moved. The cost of a check does not grow with the number of live keys.
    """

    def __init__(self, strategy: Strategy, clock: Callable[[], float] = time.time, *,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(f"max_keys={max_keys!r}: must be a whole number >= 1")
        self.max_keys = max_keys
        spec = strategy_named(strategy)
        self._spec = spec
        self._algorithm = spec.memory
        # Bound once: the single-limit path calls them on every request.
        self._one = spec.memory.one
        self._decode = spec.decode
        self._clock = clock
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {}
        #: Penalty key -> epoch ms when the penalty ends.
        self.penalties: dict[str, int] = {}
        #: The lease the decision being made takes ("" when none); set under the lock.
        self.lease = ""
        self._leases = itertools.count(1)
        self._kinds: dict[str, MemoryAlgorithm] = {kind.name: kind.memory for kind in KINDS}
        self._due: dict[int, list[str]] = {}  # expiry second -> keys filed under it
        self._seconds: list[int] = []  # heap of the seconds in _due

    def __len__(self) -> int:
        return len(self.data)

    def decision(self, plan: Plan, *, consume: bool = True,
                 storage_error: bool = False) -> Decision:
        """Decide *plan*: the `Decision` a storage call would give, with what a settle
        needs (its token) and the lease a concurrency limit took.

        One clock reading serves the check and the quotas' reset times.
        """
        clock = self._clock()
        now = int(clock * 1000)
        values, held, lease = self._judge(plan, now, consume)
        quotas = self._quotas(plan, values, clock)
        if held:
            return Decision(False, plan, penalized(quotas, held, clock),
                            storage_error=storage_error)
        allowed = all_allowed(quotas)
        token = (plan_marks(self._spec, plan, values, now)
                 if consume and plan.settle is not None and not storage_error else ())
        return Decision(allowed, plan, quotas, storage_error, token,
                        lease=lease if allowed else "")

    def quotas(self, plan: Plan, *, consume: bool = True) -> tuple[Quota, ...]:
        """Decide *plan* and decode the result: one `Quota` per plan item."""
        clock = self._clock()
        if plan.penalty is None and not plan.lease:
            return self._quotas(plan, self._decide(plan, int(clock * 1000), consume), clock)
        return self.decision(plan, consume=consume).quotas

    def _quotas(self, plan: Plan, values: list[int], clock: float) -> tuple[Quota, ...]:
        if len(plan.items) == 1 and plan.items[0].strategy is None:
            return self._decode(plan, values, clock)
        return decode_plan(self._spec, plan, values, clock)

    def _judge(self, plan: Plan, now: int, consume: bool) -> tuple[list[int], int, str]:
        """`_decide` with the plan's penalty: its integers, the penalty's ms left and
        the lease taken."""
        penalty = plan.penalty
        if penalty is None:
            values, lease = self._decide_leased(plan, now, consume)
            return values, 0, lease
        # Read, decided and set under the lock each, not across: a thread racing the
        # refusal that opens the penalty can still be decided by the limits alone, as a
        # request in flight on another server would be.
        until = self.penalties.get(penalty.key, 0)
        held = until - now if until > now else 0
        values, lease = self._decide_leased(plan, now, consume and not held)
        if consume and not held and not self._allowed(plan, values, penalty.triggers):
            with self._lock:
                if len(self.penalties) >= self.max_keys:
                    # Bounded like the counters: forget the penalties already served.
                    self.penalties = {k: v for k, v in self.penalties.items() if v > now}
                self.penalties[penalty.key] = now + penalty.ms
            held = penalty.ms
        return values, held, lease

    def _allowed(self, plan: Plan, values: list[int], count: int) -> bool:
        """Whether the first *count* items of *plan* were allowed in *values*."""
        position = 0
        for item in plan.items[:count]:
            if not values[position]:
                return False
            position += (item.strategy or self._spec).width
        return True

    def _decide_leased(self, plan: Plan, now: int, consume: bool) -> tuple[list[int], str]:
        """`_decide`, taking a new lease when the plan has a concurrency limit."""
        lease = str(next(self._leases)) if plan.lease and consume else ""
        return self._decide(plan, now, consume, lease), lease

    def release(self, plan: Plan, lease: str) -> None:
        """End *lease* on every concurrency limit of *plan*: its slots are free again."""
        with self._lock:
            for item in plan.items:
                if item.strategy is not None and item.strategy.unit is not None:
                    entry = self.data.get(self._key_of(item))
                    if entry is not None:
                        entry.pop(lease, None)

    def settle(self, plan: Plan, deltas: Sequence[int], token: Sequence[int]) -> None:
        """Apply *deltas* (one per plan item) to the reservation *token* describes."""
        now = int(self._clock() * 1000)
        with self._lock:
            for index, (item, delta) in enumerate(zip(plan.items, deltas, strict=True)):
                if delta:
                    (item.strategy or self._spec).memory.settle(
                        self, self.key(item, now), item, delta, token[2 * index],
                        token[2 * index + 1], now)

    def _decide(self, plan: Plan, now: int, consume: bool, lease: str = "") -> list[int]:
        with self._lock:
            seconds = self._seconds
            if seconds and seconds[0] * 1000 <= now:  # a second has passed: expire
                self._expire(now)
            items = plan.items
            if len(items) == 1 and items[0].strategy is None:
                # Nothing to agree with: read and write at once.
                item = items[0]
                key = item.limit_key or item_key(item)
                if len(self.data) >= self.max_keys and key not in self.data:
                    key = self._room_for(item, key, now)
                return self._one(self, key, item, now, consume)
            self.lease = lease
            return decide_in_memory(self._spec, self, plan, now, consume)

    def penalty(self, key: str) -> float:
        """Seconds left of the penalty stored under *key* (0 when none)."""
        with self._lock:
            return max(0, self.penalties.get(key, 0) - int(self._clock() * 1000)) / 1000

    def clear(self, key: str) -> None:
        """Forget every counter (or penalty) stored under *key*."""
        with self._lock:
            self.data.pop(key, None)
            self.penalties.pop(key, None)

    def clear_item(self, item: PlanItem) -> None:
        """Forget the counter of *item* (in its strategy's keys)."""
        self.clear(self._key_of(item))

    def key(self, item: PlanItem, now: int) -> str:
        """The key *item* is counted under: its own, or past the cap its overflow key."""
        key = self._key_of(item)
        if len(self.data) >= self.max_keys and key not in self.data:
            return self._room_for(item, key, now)
        return key

    @staticmethod
    def _key_of(item: PlanItem) -> str:
        spec = item.strategy
        return item_key(item) if spec is None else spec.name + _KIND + item_key(item)

    def _room_for(self, item: PlanItem, key: str, now: int) -> str:
        # Full: drop another batch of expired counters first; still full, count the new
        # identity in its limit's shared overflow counter.
        self._expire(now)
        if len(self.data) < self.max_keys:
            return key
        overflow = limit_key(item.limit, _OVERFLOW)
        spec = item.strategy
        return overflow if spec is None else spec.name + _KIND + overflow

    def file(self, key: str, expires_ms: int) -> None:
        """Release *key* once *expires_ms* (epoch ms) has passed, unless its expiry moves."""
        second = expires_ms // 1000 + 1
        keys = self._due.get(second)
        if keys is None:
            self._due[second] = [key]
            heapq.heappush(self._seconds, second)
        else:
            keys.append(key)

    def _expire(self, now: int) -> None:
        """Drop up to `EXPIRE_BATCH` counters filed under seconds that have passed."""
        seconds, due, data = self._seconds, self._due, self.data
        default, kinds = self._algorithm.expires, self._kinds
        budget = EXPIRE_BATCH
        while seconds and seconds[0] * 1000 <= now:
            second = seconds[0]
            keys = due[second]
            while keys and budget:
                budget -= 1
                key = keys.pop()
                entry = data.get(key)
                if entry is None:
                    continue
                until = (default(entry) if _KIND not in key
                         else kinds[key.partition(_KIND)[0]].expires(entry))
                if until <= now:
                    del data[key]
                else:
                    self.file(key, until)  # its expiry moved on since it was filed
            if keys:  # the budget ran out: the rest waits for the next checks
                return
            heapq.heappop(seconds)
            del due[second]
