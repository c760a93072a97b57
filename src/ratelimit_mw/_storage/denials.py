"""Refusals repeated locally: the storage's own answer, reused until it stops holding.

A client far over its limit costs a storage round trip per request, all of them refused.
Once the storage has refused a plan, the refusal holds until every refusing limit has
room again (its ``retry_after``): until then this process answers the same plan with the
same refusal, counting down, without asking. Never looser than the storage: it only
repeats a refusal, and only for as long as the storage said it holds. No I/O.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from .._core import Decision, Plan
from ..errors import ConfigurationError

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_ENTRIES", "Denials"]

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 4 << 20
#: What an entry costs besides its keys' text: the plan, the decision, the quotas.
_ENTRY_OVERHEAD = 400


class Denials:
    """An LRU of refused plans: at most *max_entries*, and about *max_bytes* of them.

    Example::

        denials = Denials()
        denials.add(decision)            # a refusal the storage made
        denials.get(plan)                # the same refusal, counting down; None once over

    Keyed by the plan object, which `Policy` reuses for every request of one client on
    one rule (an entry holds its plan, so no other object can take its id).
    """

    __slots__ = ("_bytes", "_entries", "_lock", "max_bytes", "max_entries")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name}={value!r}: must be a whole number >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        #: id(plan) -> (plan, until, decided at, decision, size)
        self._entries: OrderedDict[int, tuple[Plan, float, float, Decision, int]] = (
            OrderedDict())
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, plan: Plan) -> Decision | None:
        """The refusal still holding for *plan*, counted down to now; else ``None``."""
        entry = self._entries.get(id(plan))
        if entry is None:
            return None
        now = time.time()
        with self._lock:
            if entry[0] is not plan or entry[1] <= now:
                self._drop(id(plan))
                return None
            self._entries.move_to_end(id(plan))
        elapsed = now - entry[2]
        decision = entry[3]
        return decision._replace(quotas=tuple(
            q if q.allowed else q._replace(retry_after=max(0.0, q.retry_after - elapsed))
            for q in decision.quotas), token=(), local=True)

    def add(self, decision: Decision, asked: float) -> None:
        """Remember a refusal the storage made, until every refusing limit has room.

        *asked* is when the storage was asked (epoch seconds): it decided after that, so
        its ``retry_after`` counted from *asked* never outlasts the refusal it made.
        """
        hold = max((q.retry_after for q in decision.quotas if not q.allowed), default=0.0)
        if decision.allowed or hold <= 0 or decision.storage_error or decision.local:
            return
        plan = decision.plan
        now = asked
        size = _ENTRY_OVERHEAD + len(plan.identity) + sum(len(item.key) for item in plan.items)
        with self._lock:
            self._drop(id(plan))
            self._entries[id(plan)] = (plan, now + hold, now, decision, size)
            self._bytes += size
            while self._entries and (len(self._entries) > self.max_entries
                                     or self._bytes > self.max_bytes):
                _key, oldest = self._entries.popitem(last=False)
                self._bytes -= oldest[4]

    def clear(self) -> None:
        """Forget every refusal (after a reset, which may have freed room)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _drop(self, key: int) -> None:
        entry: Any = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[4]

