"""What a strategy is: the parts every storage path needs of it, in one record. No I/O.

A strategy decides a whole plan in one step, in the same integers on every storage:

- on Redis, its Lua ``read`` and ``write`` functions answer in one round trip, inside
  the one script that holds every strategy (`script`), so a plan may mix strategies;
- in memory, its `MemoryAlgorithm` gives the same integers for the same history;
- its ``decode`` turns those integers into `Quota` objects, so the arithmetic of resets
  and retries lives once, in plain unit-tested Python.

All or nothing, everywhere: every limit of a plan is read first, and only when all of them
have room is any of them consumed. That rule is written once for Lua (`LUA_DECIDE`) and
once for memory (`decide_in_memory`). A plan item names its strategy; one that does not
(``None``) uses the limiter's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .._core import Plan, PlanItem, Quota

__all__ = ["LUA_PRELUDE", "SETTLE_PRELUDE", "Decoder", "MemoryAlgorithm", "MemoryBase",
           "StrategySpec", "decide_in_memory", "decode_plan", "plan_marks", "script",
           "settle_script"]

#: Turns a script's integers for a plan into one `Quota` per plan item.
Decoder = Callable[[Plan, Sequence[int], float], tuple[Quota, ...]]

# Redis < 5 replicates scripts verbatim and refuses writes after TIME unless effects
# replication is switched on; on Redis >= 5 this is already the default and a no-op.
# Time is Redis's own (TIME), so every app server agrees on it whatever its clock; times
# cross the wire as integer milliseconds (Lua numbers become integer replies).
#
# One script holds every strategy (`script`), so a plan whose limits use different
# strategies (a rule's GCRA beside the global fixed window, a concurrency lease beside a
# rate) is still decided all or nothing in one call. Each strategy's ``read`` and
# ``write`` live in a block of their own and are filed in ``KINDS`` under the strategy's
# number (`KIND_NUMBERS`), with how many keys one of its limits has. Lua builds a
# block's functions every time the block runs, so a call runs only the blocks of the
# kinds its plan names (``need``): the others cost it nothing.
#
# ARGV: n; "0" for a dry run (decided and answered, nothing admitted: peeks of the
# strategies whose keys only our scripts read, and the first step of a plan whose keys
# span Redis Cluster slots), else "1"; the penalty in ms (0: none) and how many of the
# first limits trigger it; the lease a concurrency limit takes ("" when none); then per
# limit its strategy's number, amount, expiry (seconds), cost and the strategy's extra
# integer (GCRA's burst, a calendar window's end, a lease's timeout; 0 when none).
# KEYS: each limit's keys, then the penalty's key when there is a penalty.
# The answer: each limit's integers, then the penalty's ms left (0: none), then the time.
LUA_PRELUDE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = tonumber(ARGV[1])
local consume = ARGV[2] ~= '0'
local penalty, triggers = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease = ARGV[5]
local KINDS, need = {}, {}
for i = 1, n do need[tonumber(ARGV[5 * i + 1])] = true end
"""
LUA_DECIDE = """
-- read(k, amount, expiry, cost, extra) -> state, fits; write(k, state, fits, admit,
-- amount, expiry, cost, extra) -> the limit's integers (k: the limit's first key).
-- Nothing is consumed unless every limit fits, and nothing while the identity serves a
-- penalty.
local specs, first = {}, 1
for i = 1, n do
  local b = 5 * i
  local kind = KINDS[tonumber(ARGV[b + 1])]
  specs[i] = {kind, first, tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]),
              tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])}
  first = first + kind[3]
end
local held = 0
if penalty > 0 then held = math.max(0, redis.call('PTTL', KEYS[#KEYS])) end
local states, fits, admit = {}, {}, consume and held == 0
local refused = false
for i = 1, n do
  local s = specs[i]
  states[i], fits[i] = s[1][1](s[2], s[3], s[4], s[5], s[6])
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
  local s = specs[i]
  for _, value in ipairs(s[1][2](s[2], states[i], fits[i], admit, s[3], s[4], s[5], s[6])) do
    out[#out + 1] = value
  end
end
out[#out + 1] = held
-- the time of the decision, last: a settle finds the reservation by it
out[#out + 1] = now_ms
return out
"""

# Settling a reservation once the response is known (``count_when``, ``response_cost``).
# ARGV: n, then per limit its strategy's number, amount, expiry (seconds), delta
# (negative: a refund), the ms time of the decision that reserved it, its strategy's mark
# (`StrategySpec.mark`) and extra integer. A strategy's ``settle(k, amount, expiry,
# delta, at, mark, extra)`` refunds only what the reservation still holds (never a later
# window's room, never below zero) and charges a positive delta as a debt.
SETTLE_PRELUDE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = tonumber(ARGV[1])
local KINDS, need = {}, {}
for i = 1, n do need[tonumber(ARGV[7 * i - 5])] = true end
"""
SETTLE_LOOP = """
local first = 1
for i = 1, n do
  local b = 7 * i - 6
  local kind = KINDS[tonumber(ARGV[b + 1])]
  kind[1](first, tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]),
          tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7]))
  first = first + kind[2]
end
return n
"""


def script(specs: Sequence[StrategySpec]) -> str:
    """The one decision script of *specs*: strategy number ``i + 1`` is ``specs[i]``."""
    return LUA_PRELUDE + _blocks([(spec.lua, f"read, write, {spec.keys}")
                                  for spec in specs]) + LUA_DECIDE


def settle_script(specs: Sequence[StrategySpec]) -> str:
    """The one settle script of *specs*, numbered as in `script`."""
    return SETTLE_PRELUDE + _blocks([(spec.settle_lua, f"settle, {spec.keys}")
                                     for spec in specs]) + SETTLE_LOOP


def _blocks(kinds: Sequence[tuple[str, str]]) -> str:
    """Each kind's Lua (its source, and what ``KINDS`` files under its number), run only
    when the call's plan names it."""
    return "".join(f"if need[{number}] then\n{source}\nKINDS[{number}] = {{{entry}}}\nend\n"
                   for number, (source, entry) in enumerate(kinds, 1))


class MemoryTable(Protocol):
    """What a memory algorithm may touch: the entries, and filing a key for expiry."""

    data: dict[str, Any]
    #: The lease the decision being made takes (a concurrency limit's member); "" none.
    lease: str

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


def decide_in_memory(default: StrategySpec, table: MemoryTable, plan: Plan, now: int,
                     consume: bool) -> list[int]:
    """The integers of the script for *plan*, decided all or nothing; items without a
    strategy of their own use *default*'s."""
    reads = []
    admit = consume
    for item in plan.items:
        algorithm = (item.strategy or default).memory
        key = table.key(item, now)
        state, fits = algorithm.read(table, key, item, now, consume)
        reads.append((algorithm, key, state, fits))
        admit = admit and fits
    out: list[int] = []
    for item, (algorithm, key, state, fits) in zip(plan.items, reads, strict=True):
        out += algorithm.write(table, key, item, state, fits, admit, now)
    return out


def _plain(items: Sequence[PlanItem]) -> bool:
    """Whether no item of a plan names a strategy of its own (a loop, not ``all()``: the
    request path builds no generator for it)."""
    for item in items:  # noqa: SIM110  (see the docstring)
        if item.strategy is not None:
            return False
    return True


def decode_plan(default: StrategySpec, plan: Plan, values: Sequence[int],
                now: float) -> tuple[Quota, ...]:
    """The quotas of *plan* from a script's integers (without the trailing ones), each
    item decoded by its strategy (*default* where it names none)."""
    items = plan.items
    if _plain(items):
        return default.decode(plan, values, now)
    quotas: list[Quota] = []
    position = 0
    for item in items:
        spec = item.strategy or default
        quotas += spec.decode(plan._replace(items=(item,)),
                              values[position:position + spec.width], now)
        position += spec.width
    return tuple(quotas)


def plan_marks(default: StrategySpec, plan: Plan, values: Sequence[int],
               at: int) -> tuple[int, ...]:
    """`StrategySpec.marks` of a plan whose items may name their strategies."""
    items = plan.items
    if _plain(items):
        return default.marks(values, at)
    out: list[int] = []
    position = 0
    for item in items:
        spec = item.strategy or default
        out += spec.marks(values[position:position + spec.width], at)
        position += spec.width
    return tuple(out)


def _no_argument(item: PlanItem, now: float) -> int:
    return int(item.option or 0)


@dataclass(frozen=True, repr=False)
class StrategySpec:
    """One strategy, as every storage path needs it.

    Example::

        StrategySpec("fixed-window", FIXED_WINDOW_LUA, decode, FixedWindow(),
                     lambda prefix, key: (f"{prefix}:{key}",), "FixedWindowRateLimiter")

    *lua* defines the strategy's ``read`` and ``write`` (see `LUA_DECIDE`); *redis_keys*
    gives the Redis keys of one limit from the storage's key prefix and the limit's
    ``limits`` key (the layout ``limits`` itself uses for the strategy, so it can still
    read and clear them); *limits_class* names the ``limits`` strategy class used on
    storages without scripts (memcached, MongoDB, ...), ``None`` where ``limits`` has none.
    """

    name: str
    lua: str
    decode: Decoder
    memory: MemoryAlgorithm
    redis_keys: Callable[[str, str], tuple[str, ...]]
    limits_class: str | None
    #: The Lua ``settle`` function (see `SETTLE_PRELUDE`), what a settle applies.
    settle_lua: str = ""
    #: Integers per limit in the script's answer, and which of them is the limit's mark
    #: for a settle (``None``: the decision's time alone finds the reservation).
    width: int = 0
    mark: int | None = None
    #: The extra integer the script gets for a limit (`LUA_PRELUDE`) from its plan item
    #: and the time: the item's ``option`` unless the strategy computes it.
    argument: Callable[[PlanItem, float], int] = _no_argument
    #: The ``RateLimit-Policy`` quota unit (``qu``); ``None``: requests, the default.
    unit: str | None = None
    #: Whether the strategy's ``argument`` changes with time (read per call, not cached).
    timed: bool = False

    def __repr__(self) -> str:
        return f"StrategySpec({self.name!r})"

    @property
    def keys(self) -> int:
        """How many Redis keys one limit of this strategy has."""
        return len(self.redis_keys("p", "k"))

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
