"""Medians and spreads of a few rounds."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["summary"]


def summary(values: list[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "values"}``: the median of the rounds and their range."""
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": [round(v, 4) for v in values],
    }
