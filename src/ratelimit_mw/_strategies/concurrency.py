"""Concurrency leases: at most N requests of an identity in flight at once. No I/O.

Not a rate: a limit of this kind counts the requests that have started and not ended.
A request that is admitted takes a *lease* (a member named by the limiter, unique per
request) in the same script call as its rates; the middleware releases it when the
response ends (`ScriptPath.release_flow`, `MemoryStore.release`). A lease also ends by
itself after the timeout (the plan item's ``option``, ms), so a worker that dies mid-
request holds its slot no longer than that.

Layout (``limits`` has no such strategy): one sorted set per (rule, identity), members
the leases, scores the ms when each lease times out. Integers per limit: allowed, leases
held after the decision, ms to wait before trying again (0 when allowed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._core import Plan, PlanItem, Quota
from .base import MemoryBase, MemoryTable, StrategySpec, single_key

__all__ = ["CONCURRENCY", "RETRY_MS"]

#: What a refusal tells the client to wait: a slot frees when any request in flight
#: ends, which no one can predict, so one second (``Retry-After: 1``).
RETRY_MS = 1000

# Every request takes one slot whatever its cost: a lease is a request in flight.
_LUA = f"""
local function read(k, amount, expiry, cost, extra)
  local count = redis.call('ZCOUNT', KEYS[k], '(' .. now_ms, '+inf')
  return count, count < amount
end
local function write(k, count, fits, admit, amount, expiry, cost, extra)
  if admit then
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now_ms)
    redis.call('ZADD', KEYS[k], now_ms + extra, lease)
    redis.call('PEXPIRE', KEYS[k], extra)
    count = count + 1
  end
  return {{fits and 1 or 0, count, fits and 0 or {RETRY_MS}}}
end
"""

# Leases are not reservations of a cost: a response's count or cost changes nothing here.
_SETTLE = """
local function settle(k, amount, expiry, delta, at, mark, extra) end
"""


class _Memory(MemoryBase):
    """Entries map each lease to the epoch ms when it times out."""

    def read(self, table: MemoryTable, key: str, item: PlanItem, now: int,
             consume: bool) -> tuple[Any, bool]:
        entry = table.data.get(key)
        count = 0 if entry is None else sum(1 for until in entry.values() if until > now)
        return entry, count < item.limit.amount

    def write(self, table: MemoryTable, key: str, item: PlanItem, state: Any, fits: bool,
              admit: bool, now: int) -> list[int]:
        entry = state
        if admit:
            if entry is None:
                entry = table.data[key] = {}
            for lease in [lease for lease, until in entry.items() if until <= now]:
                del entry[lease]  # timed out: their workers died mid-request
            entry[table.lease] = now + item.option
            table.file(key, now + item.option)
        count = 0 if entry is None else sum(1 for until in entry.values() if until > now)
        return [int(fits), count, 0 if fits else RETRY_MS]

    def expires(self, entry: Any) -> int:
        return max(entry.values(), default=0)

    def settle(self, table: MemoryTable, key: str, item: PlanItem, delta: int, at: int,
               mark: int, now: int) -> None:
        return


def decode(plan: Plan, values: Sequence[int], now: float) -> tuple[Quota, ...]:
    """``allowed, leases, retry_ms`` per limit."""
    quotas = []
    for index, item in enumerate(plan.items):
        allowed, count, retry_ms = values[3 * index:3 * index + 3]
        quotas.append(Quota(bool(allowed), item.limit, max(0, item.limit.amount - count),
                            now + retry_ms / 1000, retry_ms / 1000))
    return tuple(quotas)


CONCURRENCY = StrategySpec("concurrency", _LUA, decode, _Memory(), single_key, None,
                           _SETTLE, width=3, unit="concurrent-requests")
