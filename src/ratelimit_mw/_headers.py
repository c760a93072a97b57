"""Quota headers and problem bodies for a `Decision`. No I/O.

- IETF draft-ietf-httpapi-ratelimit-headers-11 ``RateLimit-Policy`` and ``RateLimit``
  (structured fields, RFC 9651): one list member per limit in force.
- The legacy ``X-RateLimit-Limit/Remaining/Reset`` trio (epoch seconds), as GitHub,
  Flask-Limiter and slowapi send it, for the most restrictive limit.
- ``Retry-After`` (delay-seconds) on 429 only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import AnyStr, Generic, Literal

from ._core import Decision, PlanItem, Quota
from .errors import ConfigurationError

__all__ = ["HEADER_MODES", "HeaderMode", "HeaderRenderer", "problem_body", "unavailable_body"]

HeaderMode = Literal["draft", "legacy", "both", "none"]
HEADER_MODES: tuple[HeaderMode, ...] = ("draft", "legacy", "both", "none")

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
PROBLEM_JSON = "application/problem+json"


def sf_string(value: str) -> str:
    """Serialise *value* as an RFC 9651 sf-string (printable ASCII; others become ``?``)."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append("?")
    return '"' + "".join(out) + '"'


class _Spelling(Generic[AnyStr]):
    """How the header fields are written: ``str`` for WSGI, lower-case ``bytes`` for ASGI.

    The fields are rendered once, by `HeaderRenderer._render`, in either spelling: both
    ``str`` and ``bytes`` take ``%`` formatting, so only these constants differ.
    """

    __slots__ = ("convert", "join", "limit", "member", "number", "policies", "policy",
                 "ratelimit", "remaining", "reset", "retry_after")

    def __init__(self, names: tuple[AnyStr, AnyStr, AnyStr, AnyStr, AnyStr, AnyStr],
                 member: AnyStr, join: AnyStr, number: AnyStr,
                 convert: Callable[[str], AnyStr]) -> None:
        self.policy: AnyStr = names[0]
        self.ratelimit: AnyStr = names[1]
        self.limit: AnyStr = names[2]
        self.remaining: AnyStr = names[3]
        self.reset: AnyStr = names[4]
        self.retry_after: AnyStr = names[5]
        self.member: AnyStr = member  # a RateLimit list member: name, r, t
        self.join: AnyStr = join
        self.number: AnyStr = number
        self.convert: Callable[[str], AnyStr] = convert
        #: (policy, id of its limit) -> the serialised name, the RateLimit-Policy member,
        #: the X-RateLimit-Limit value, and the limit itself (held, so that no other limit
        #: can take its id). Shared by every renderer: the strings depend on nothing else.
        self.policies: dict[tuple[str, int], tuple[AnyStr, AnyStr, AnyStr, object]] = {}


_NAMES = ("RateLimit-Policy", "RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining",
          "X-RateLimit-Reset", "Retry-After")
_TEXT: _Spelling[str] = _Spelling(_NAMES, "%s;r=%d;t=%d", ", ", "%d", str)
_ASGI: _Spelling[bytes] = _Spelling(
    tuple(name.lower().encode() for name in _NAMES),  # type: ignore[arg-type]
    b"%s;r=%d;t=%d", b", ", b"%d", str.encode)


class HeaderRenderer:
    """Renders the quota headers of a decision in one of the modes.

    Example::

        renderer = HeaderRenderer("both")
        renderer.render(decision)   # [("RateLimit-Policy", '"login";q=5;w=60'), ...]

    Header names and policy strings are prepared once per policy, not per request.
    """

    __slots__ = ("_draft", "_fields", "_legacy")

    def __init__(self, mode: str = "both") -> None:
        if mode not in HEADER_MODES:
            raise ConfigurationError(f"headers={mode!r}: use one of {', '.join(HEADER_MODES)}")
        self._draft = mode in ("draft", "both")
        self._legacy = mode in ("legacy", "both")
        self._fields = self._draft or self._legacy  # "none": no quota fields at all

    def render(self, decision: Decision, now: float | None = None, *,
               shadow: bool = False) -> list[tuple[str, str]]:
        """Header fields for *decision*, as ``(name, value)`` strings.

        *shadow*: the request goes through although refused (shadow mode), so the quota
        fields are sent but no ``Retry-After``.
        """
        return self._render(decision, now, shadow, _TEXT)

    def render_asgi(self, decision: Decision, *, shadow: bool = False,
                    ) -> list[tuple[bytes, bytes]]:
        """`render` as ASGI wants it: lower-case names, latin-1 bytes."""
        return self._render(decision, None, shadow, _ASGI)

    def _render(self, decision: Decision, now: float | None, shadow: bool,
                spelling: _Spelling[AnyStr]) -> list[tuple[AnyStr, AnyStr]]:
        quotas = decision.quotas
        out: list[tuple[AnyStr, AnyStr]] = []
        # "none" drops the quota fields, not Retry-After: that belongs to the 429 itself
        # (RFC 6585), and a client told to retry needs to know when.
        if not quotas:
            return out
        if now is None:
            now = time.time()
        number = spelling.number
        if self._fields:
            if len(quotas) == 1:
                # One limit, the common case: its constant fields come from the cache.
                quota = quotas[0]
                item = decision.plan.items[0]
                found = spelling.policies.get((item.policy, id(item.limit)))
                if found is None:
                    found = self._policy(item, spelling)
                remaining = quota.remaining if quota.remaining > 0 else 0  # r is non-negative
                if self._draft:
                    delay = math.ceil(quota.reset_at - now)
                    out.append((spelling.policy, found[1]))
                    out.append((spelling.ratelimit, spelling.member % (
                        found[0], remaining, delay if delay > 0 else 0)))
                if self._legacy:
                    out.append((spelling.limit, found[2]))
                    out.append((spelling.remaining, number % remaining))
                    out.append((spelling.reset, number % math.ceil(quota.reset_at)))
            else:
                self._render_many(decision, now, spelling, out)
        if not decision.allowed and not shadow:
            # Never earlier than the end of a refused limit's window, whatever the limiter
            # reported as retry_after; a refusal whose quotas all passed waits 1 s.
            wait = max((max(q.retry_after, q.reset_at - now) for q in quotas if not q.allowed),
                       default=0.0)
            out.append((spelling.retry_after, number % max(1, math.ceil(wait))))
        return out

    def _render_many(self, decision: Decision, now: float, spelling: _Spelling[AnyStr],
                     out: list[tuple[AnyStr, AnyStr]]) -> None:
        """`_render`'s quota fields for a decision of several limits."""
        quotas = decision.quotas
        number = spelling.number
        if self._draft:
            members = [self._member(item, quota, now, spelling)
                       for item, quota in zip(decision.plan.items, quotas, strict=True)]
            out.append((spelling.policy, spelling.join.join([member[0] for member in members])))
            out.append((spelling.ratelimit,
                        spelling.join.join([member[1] for member in members])))
        if self._legacy:
            # The most restrictive limit: refused first, then the least remaining, then
            # the latest reset.
            tight = min(quotas, key=lambda q: (q.allowed, max(0, q.remaining), -q.reset_at))
            out.append((spelling.limit, number % tight.limit.amount))
            remaining = tight.remaining
            out.append((spelling.remaining, number % (remaining if remaining > 0 else 0)))
            out.append((spelling.reset, number % math.ceil(tight.reset_at)))

    def _member(self, item: PlanItem, quota: Quota, now: float,
                spelling: _Spelling[AnyStr]) -> tuple[AnyStr, AnyStr]:
        """One limit's ``RateLimit-Policy`` and ``RateLimit`` list members."""
        # Keyed by the limit object: the entry holds it, so its id stays its own.
        found = spelling.policies.get((item.policy, id(item.limit)))
        if found is None:
            found = self._policy(item, spelling)
        delay = math.ceil(quota.reset_at - now)
        remaining = quota.remaining if quota.remaining > 0 else 0  # r is non-negative
        return found[1], spelling.member % (found[0], remaining, delay if delay > 0 else 0)

    def _policy(self, item: PlanItem,
                spelling: _Spelling[AnyStr]) -> tuple[AnyStr, AnyStr, AnyStr, object]:
        """The serialised policy name, its ``RateLimit-Policy`` member and its
        ``X-RateLimit-Limit`` value, cached."""
        cache = spelling.policies
        if len(cache) > 4096:  # bounded: policies are config, not input
            cache.clear()
        limit = item.limit
        serialised = sf_string(item.policy)
        unit = item.strategy.unit if item.strategy is not None else None
        # A quota in another unit than requests names it (draft-11 "qu"); requests in
        # flight have no window.
        member = (f"{serialised};q={limit.amount};w={limit.get_expiry()}" if unit is None
                  else f"{serialised};q={limit.amount};qu={sf_string(unit)}")
        found = cache[(item.policy, id(limit))] = (
            spelling.convert(serialised), spelling.convert(member),
            spelling.number % limit.amount, limit)
        return found


def problem_body(decision: Decision) -> bytes:
    """The RFC 9457 body of a 429: ``quota-exceeded`` with ``violated-policies``."""
    violated = list(decision.violated)
    return json.dumps({
        "type": QUOTA_EXCEEDED,
        "title": "Request cannot be satisfied as assigned quota has been exceeded",
        "status": 429,
        "detail": "Too many requests; retry after the time in the Retry-After header.",
        "violated-policies": violated,
    }, separators=(",", ":")).encode()


def unavailable_body() -> bytes:
    """The RFC 9457 body of the 503 sent when the storage fails and the policy is deny."""
    return json.dumps({
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The rate limit service is unavailable; retry shortly.",
    }, separators=(",", ":")).encode()
