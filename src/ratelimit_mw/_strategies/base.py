"""What a strategy is: the parts every storage path needs of it, in one record. No I/O.

A strategy decides a whole plan in one step, in the same integers on every storage:

- on Redis, its Lua script (the shared `LUA_PRELUDE` plus the strategy's ``read`` and
  ``write`` functions) answers in one round trip;
- in memory, its `MemoryAlgorithm` gives the same integers for the same history;
- its ``decode`` turns those integers into `Quota` objects, so the arithmetic of resets
  and retries lives once, in plain unit-tested Python.

All or nothing, everywhere: every limit of a plan is read first, and only when all of them
have room is any of them consumed. That rule is written once for Lua (`LUA_PRELUDE`'s
``decide``) and once for memory (`decide_in_memory`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .._core import Plan, PlanItem, Quota

__all__ = ["LUA_PRELUDE", "SETTLE_PRELUDE", "Decoder", "MemoryAlgorithm", "MemoryBase",
           "StrategySpec", "decide_in_memory"]

#: Turns a script's integers for a plan into one `Quota` per plan item.
Decoder = Callable[[Plan, Sequence[int], float], tuple[Quota, ...]]

# Redis < 5 replicates scripts verbatim and refuses writes after TIME unless effects
# replication is switched on; on Redis >= 5 this is already the default and a no-op.
# Time is Redis's own (TIME), so every app server agrees on it whatever its clock; times
# cross the wire as integer milliseconds (Lua numbers become integer replies).
# ARGV: n; "0" for a dry run (decided and answered, nothing admitted: peeks of the
# strategies whose keys only our scripts read, and the first step of a plan whose keys
# span Redis Cluster slots), else "1"; the penalty in ms (0: none) and how many of the
# first limits trigger it; then per limit amount, expiry (seconds), cost. KEYS: each
# limit's keys, then the penalty's key when there is a penalty.
# The answer: each limit's integers, then the penalty's ms left (0: none), then the time.
LUA_PRELUDE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = tonumber(ARGV[1])
local consume = ARGV[2] ~= '0'
local penalty, triggers = tonumber(ARGV[3]), tonumber(ARGV[4])
local function spec(i)
  return tonumber(ARGV[3 * i + 2]), tonumber(ARGV[3 * i + 3]), tonumber(ARGV[3 * i + 4])
end
-- read(i, amount, expiry, cost) -> state, fits; write(i, state, fits, admit, amount,
-- expiry, cost) -> the limit's integers. Nothing is consumed unless every limit fits,
-- and nothing while the identity serves a penalty.
local function decide(read, write)
  local held = 0
  if penalty > 0 then held = math.max(0, redis.call('PTTL', KEYS[#KEYS])) end
  local states, fits, admit = {}, {}, consume and held == 0
  local refused = false
  for i = 1, n do
    local amount, expiry, cost = spec(i)
    states[i], fits[i] = read(i, amount, expiry, cost)
    if not fits[i] then
      admit = false
      if i <= triggers then refused = true end
    end
  end
  if refused and consume and held == 0 and penalty > 0 then
    redis.call('SET', KEYS[#KEYS], 1, 'PX', penalty)
    held = penalty
  end
  local out = {}
  for i = 1, n do
    local amount, expiry, cost = spec(i)
    for _, value in ipairs(write(i, states[i], fits[i], admit, amount, expiry, cost)) do
      out[#out + 1] = value
    end
  end
  out[#out + 1] = held
  -- the time of the decision, last: a settle finds the reservation by it
  out[#out + 1] = now_ms
  return out
end
"""

# Settling a reservation once the response is known (``count_when``, ``response_cost``).
# ARGV: n, then per limit amount, expiry (seconds), delta (negative: a refund), the ms
# time of the decision that reserved it, and its strategy's mark (`StrategySpec.mark`).
# A strategy's ``settle(i, amount, expiry, delta, at, mark)`` refunds only what the
# reservation still holds (never a later window's room, never below zero) and charges a
# positive delta as a debt.
SETTLE_PRELUDE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = tonumber(ARGV[1])
"""
SETTLE_LOOP = """
for i = 1, n do
  local b = 5 * i - 4
  settle(i, tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]),
         tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]))
end
return n
"""


class MemoryTable(Protocol):
    """What a memory algorithm may touch: the entries, and filing a key for expiry."""

    data: dict[str, Any]

    def key(self, item: PlanItem, now: int) -> str:
        """The key *item* is counted under (the table may bound how many it keeps)."""
        ...

    def file(self, key: str, expires_ms: int) -> None: ...


class MemoryAlgorithm(Protocol):
    """A strategy's counters in process memory, answering in its script's integers.

    ``read`` returns the limit's state at *now* (``consume``: it may also write, where
    the script does, e.g. a window rollover) and whether a request of the item's cost
    fits; ``write`` consumes when *admit* and returns the integers for the limit.
    ``expires`` is when an entry may be dropped (epoch ms).
    """

    def read(self, table: MemoryTable, key: str, item: PlanItem, now: int,
             consume: bool) -> tuple[Any, bool]: ...

    def write(self, table: MemoryTable, key: str, item: PlanItem, state: Any, fits: bool,
              admit: bool, now: int) -> list[int]: ...

    def expires(self, entry: Any) -> int: ...

    def one(self, table: MemoryTable, key: str, item: PlanItem, now: int,
            consume: bool) -> list[int]:
        """`read` then `write` for a plan of one limit, as one call (`MemoryBase` has
        the plain form; a strategy may fuse them on its hot path)."""
        ...

    def settle(self, table: MemoryTable, key: str, item: PlanItem, delta: int, at: int,
               mark: int, now: int) -> None:
        """Apply *delta* to the reservation decided at *at* (see `SETTLE_PRELUDE`)."""
        ...


class MemoryBase:
    """What every memory algorithm shares: `one` as `read` then `write`."""

    def read(self, table: MemoryTable, key: str, item: PlanItem, now: int,
             consume: bool) -> tuple[Any, bool]:
        raise NotImplementedError

    def write(self, table: MemoryTable, key: str, item: PlanItem, state: Any, fits: bool,
              admit: bool, now: int) -> list[int]:
        raise NotImplementedError

    def one(self, table: MemoryTable, key: str, item: PlanItem, now: int,
            consume: bool) -> list[int]:
        state, fits = self.read(table, key, item, now, consume)
        return self.write(table, key, item, state, fits, consume and fits, now)


def decide_in_memory(algorithm: MemoryAlgorithm, table: MemoryTable, plan: Plan, now: int,
                     consume: bool) -> list[int]:
    """The integers of the strategy's script for *plan*, decided all or nothing."""
    reads = []
    admit = consume
    for item in plan.items:
        key = table.key(item, now)
        state, fits = algorithm.read(table, key, item, now, consume)
        reads.append((key, state, fits))
        admit = admit and fits
    out: list[int] = []
    for item, (key, state, fits) in zip(plan.items, reads, strict=True):
        out += algorithm.write(table, key, item, state, fits, admit, now)
    return out


@dataclass(frozen=True)
class StrategySpec:
    """One strategy, as every storage path needs it.

    Example::

        StrategySpec("fixed-window", FIXED_WINDOW_LUA, decode, FixedWindow(),
                     lambda prefix, key: (f"{prefix}:{key}",), "FixedWindowRateLimiter")

    *lua* is the script body after `LUA_PRELUDE` (it defines ``read`` and ``write``);
    *redis_keys* gives the Redis keys of one limit from the storage's key prefix and the
    limit's ``limits`` key (the layout ``limits`` itself uses for the strategy, so it can
    still read and clear them); *limits_class* names the ``limits`` strategy class used on
    storages without scripts (memcached, MongoDB, ...), ``None`` where ``limits`` has none.
    """

    name: str
    lua: str
    decode: Decoder
    memory: MemoryAlgorithm
    redis_keys: Callable[[str, str], tuple[str, ...]]
    limits_class: str | None
    #: The Lua ``settle`` function (after `SETTLE_PRELUDE`), what a settle applies.
    settle_lua: str = ""
    #: Integers per limit in the script's answer, and which of them is the limit's mark
    #: for a settle (``None``: the decision's time alone finds the reservation).
    width: int = 0
    mark: int | None = None

    @property
    def script(self) -> str:
        """The whole Lua script: the prelude, the strategy's functions, the decision."""
        return LUA_PRELUDE + self.lua + "\nreturn decide(read, write)\n"

    @property
    def settle_script(self) -> str:
        """The Lua script that settles reservations: prelude, ``settle``, the loop."""
        return SETTLE_PRELUDE + self.settle_lua + SETTLE_LOOP

    def marks(self, values: Sequence[int], at: int) -> tuple[int, ...]:
        """What a settle needs of each limit of a decision: ``(at, mark)`` pairs, flat.

        *values* are the decision's integers (a script's answer without its trailing
        time), *at* the time it was decided (epoch ms, the storage's clock).
        """
        count = len(values) // self.width
        index = self.mark
        out: list[int] = []
        for position in range(count):
            out += (at, 0 if index is None else values[position * self.width + index])
        return tuple(out)


def single_key(prefix: str, key: str) -> tuple[str, ...]:
    """The one Redis key ``limits`` uses for a limit under *prefix*."""
    return (f"{prefix}:{key}",)
