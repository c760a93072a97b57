"""Counting what happened: the response view, and what a response changes in the count.

A rule with ``count_when`` or ``response_cost`` reserves its cost before the app runs (so
concurrent requests cannot overshoot) and settles when the response starts: a response
that does not count is refunded, one that reports another cost is charged the difference.
`settle_deltas` turns a response into those differences; the limiters apply them. No I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

if TYPE_CHECKING:
    from ._core import Plan

__all__ = ["CountFunc", "ResponseCostFunc", "ResponseInfo", "Settle", "settle_deltas"]

logger = logging.getLogger("ratelimit_mw.middleware")


class ResponseInfo:
    """What the limiter may know of a response: its status and headers.

    The same for ASGI and WSGI; header names are matched case-insensitively and repeated
    headers are joined with ``", "``.

    Example::

        response = ResponseInfo(401, [("WWW-Authenticate", "Bearer")])
        assert response.status == 401
        assert response.header("www-authenticate") == "Bearer"
    """

    __slots__ = ("_headers", "_raw", "status")

    def __init__(self, status: int,
                 headers: Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]] = ()
                 ) -> None:
        self.status = status
        self._raw = headers
        self._headers: dict[str, str] | None = None

    def header(self, name: str) -> str | None:
        """The value of header *name* (case-insensitive), or ``None``."""
        if self._headers is None:
            found: dict[str, str] = {}
            for key, value in self._raw:
                text_key = key.decode("latin-1") if isinstance(key, bytes) else key
                text = value.decode("latin-1") if isinstance(value, bytes) else value
                text_key = text_key.lower()
                found[text_key] = f"{found[text_key]}, {text}" if text_key in found else text
            self._headers = found
        return self._headers.get(name.lower())

    def __repr__(self) -> str:
        return f"ResponseInfo({self.status})"


#: ``count_when=``: ``True`` when the response counts against the limits.
CountFunc: TypeAlias = Callable[[ResponseInfo], bool]
#: ``response_cost=``: the cost the response reports (tokens, rows, bytes).
ResponseCostFunc: TypeAlias = Callable[[ResponseInfo], int]


class Settle(NamedTuple):
    """A rule's settling functions, carried by its plans."""

    count_when: CountFunc | None
    response_cost: ResponseCostFunc | None


def settle_deltas(plan: Plan, response: ResponseInfo) -> tuple[int, ...] | None:
    """What *response* changes in each limit of *plan*'s reservation, or ``None``.

    A response that does not count gives back every limit's cost; a reported cost is
    charged its difference with the reservation (a cost below 0 counts as 0). A settling
    function that raises or answers nonsense is logged and the reservation stands: the
    response is never failed by it.
    """
    settle = plan.settle
    if settle is None:
        return None
    try:
        if settle.count_when is not None and not settle.count_when(response):
            deltas = tuple(-item.cost for item in plan.items)
        elif settle.response_cost is not None:
            reported = settle.response_cost(response)
            if isinstance(reported, bool) or not isinstance(reported, int):
                raise TypeError(f"response_cost returned {reported!r}, not a whole number")
            deltas = tuple(max(0, reported) - item.cost for item in plan.items)
        else:
            return None
    except Exception:
        logger.exception("settling %s: the rule's count_when / response_cost failed; the "
                         "reserved cost stands", plan.rule)
        return None
    return deltas if any(deltas) else None
