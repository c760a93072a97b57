"""The strategy registry: every rate-limit strategy, by name. No I/O.

A strategy is one `StrategySpec` (its Lua functions, its in-memory algorithm, how its
numbers become quotas, its Redis key layout, the ``limits`` class for other storages).
Adding a strategy is a module beside this one and one line in `STRATEGIES`: the limiters,
the memory store, the configuration and the CLI all look strategies up here.

`KINDS` adds the limits a rule asks for by other options (``concurrency=``,
``align="calendar"``): they are decided by the same machinery and in the same script,
but are not rates one chooses with ``strategy=``.
"""

from __future__ import annotations

from typing import TypeAlias

from ..errors import ConfigurationError
from .base import StrategySpec, script, settle_script
from .calendar import CALENDAR
from .concurrency import CONCURRENCY
from .fixed_window import FIXED_WINDOW
from .gcra import GCRA
from .moving_window import MOVING_WINDOW
from .sliding_window import SLIDING_WINDOW_COUNTER

__all__ = ["CALENDAR", "CONCURRENCY", "KINDS", "KIND_NUMBERS", "SCRIPT", "SETTLE_SCRIPT",
           "STRATEGIES", "Strategy", "StrategySpec", "strategy_named"]

#: A strategy's name: one of the keys of `STRATEGIES`.
Strategy: TypeAlias = str

STRATEGIES: dict[str, StrategySpec] = {spec.name: spec for spec in (
    FIXED_WINDOW,
    MOVING_WINDOW,
    SLIDING_WINDOW_COUNTER,
    GCRA,
)}

#: Every kind of limit the scripts decide, in the order of their numbers in the script.
KINDS: tuple[StrategySpec, ...] = (*STRATEGIES.values(), CONCURRENCY, CALENDAR)
#: A kind's name -> its number in `SCRIPT` and `SETTLE_SCRIPT` (from 1, as Lua counts).
KIND_NUMBERS: dict[str, int] = {spec.name: number for number, spec in enumerate(KINDS, 1)}
#: The one decision script and the one settle script, holding every kind.
SCRIPT = script(KINDS)
SETTLE_SCRIPT = settle_script(KINDS)


def strategy_named(name: object, where: str = "strategy") -> StrategySpec:
    """The strategy called *name*; a `ConfigurationError` naming the choices otherwise."""
    spec = STRATEGIES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigurationError(f"{where}={name!r}: use one of {', '.join(STRATEGIES)}")
    return spec
