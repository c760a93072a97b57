"""The strategy registry: every rate-limit strategy, by name. No I/O.

A strategy is one `StrategySpec` (its Lua script, its in-memory algorithm, how its numbers
become quotas, its Redis key layout, the ``limits`` class for other storages). Adding a
strategy is a module beside this one and one line in `STRATEGIES`: the limiters, the
memory store, the configuration and the CLI all look strategies up here.
"""

from __future__ import annotations

from typing import TypeAlias

from ..errors import ConfigurationError
from .base import StrategySpec
from .fixed_window import FIXED_WINDOW
from .gcra import GCRA
from .moving_window import MOVING_WINDOW
from .sliding_window import SLIDING_WINDOW_COUNTER

__all__ = ["STRATEGIES", "Strategy", "StrategySpec", "strategy_named"]

#: A strategy's name: one of the keys of `STRATEGIES`.
Strategy: TypeAlias = str

STRATEGIES: dict[str, StrategySpec] = {spec.name: spec for spec in (
    FIXED_WINDOW,
    MOVING_WINDOW,
    SLIDING_WINDOW_COUNTER,
    GCRA,
)}


def strategy_named(name: object, where: str = "strategy") -> StrategySpec:
    """The strategy called *name*; a `ConfigurationError` naming the choices otherwise."""
    spec = STRATEGIES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigurationError(f"{where}={name!r}: use one of {', '.join(STRATEGIES)}")
    return spec
