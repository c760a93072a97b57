"""What every JSON store shares: values are JSON text, never pickle.

A store never fails a request: what it cannot read is a miss (`loads` gives ``None``),
and the Redis stores report storage errors as a miss or a no-op.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "loads"]


def dumps(value: Any) -> str:
    """*value* as compact JSON; a value JSON cannot hold raises ``TypeError``."""
    return json.dumps(value, separators=(",", ":"))


def loads(raw: bytes | str | None) -> Any:
    """The JSON value of *raw*; ``None`` for nothing, or for text that is not JSON."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:  # not ours, or damaged: a miss, never an error
        return None
