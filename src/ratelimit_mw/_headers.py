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
from typing import Literal

from ._core import Decision
from .errors import ConfigurationError

__all__ = ["HeaderMode", "HeaderRenderer", "problem_body", "unavailable_body"]

HeaderMode = Literal["draft", "legacy", "both", "none"]
_MODES = ("draft", "legacy", "both", "none")

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
PROBLEM_JSON = "application/problem+json"
_ASGI_NAMES = {name: name.lower().encode() for name in (
    "RateLimit-Policy", "RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining",
    "X-RateLimit-Reset", "Retry-After")}


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


class HeaderRenderer:
    """Renders the quota headers of a decision in one of the modes.

    Example::

        renderer = HeaderRenderer("both")
        renderer.render(decision)   # [("RateLimit-Policy", '"login";q=5;w=60'), ...]

    Header names and policy strings are prepared once per policy, not per request.
    """

    __slots__ = ("_bytes_cache", "_draft", "_legacy", "_policy_cache")

    def __init__(self, mode: str = "both") -> None:
        if mode not in _MODES:
            raise ConfigurationError(f"headers={mode!r}: use one of {', '.join(_MODES)}")
        self._draft = mode in ("draft", "both")
        self._legacy = mode in ("legacy", "both")
        self._policy_cache: dict[tuple[str, int, int], tuple[str, str]] = {}
        self._bytes_cache: dict[tuple[str, int, int], tuple[bytes, bytes]] = {}

    def render_asgi(self, decision: Decision, *, shadow: bool = False,
                    ) -> list[tuple[bytes, bytes]]:
        """`render` as ASGI wants it: lower-case names, latin-1 bytes."""
        quotas = decision.quotas
        if len(quotas) == 1 and decision.allowed:
            # The common case, straight to bytes (the same fields as render() gives).
            quota = quotas[0]
            item = decision.plan.items[0]
            remaining = quota.remaining if quota.remaining > 0 else 0
            now = time.time()
            out: list[tuple[bytes, bytes]] = []
            if self._draft:
                name, policy = self._policy_bytes(item.policy, item.limit.amount,
                                                  item.limit.get_expiry())
                delay = math.ceil(quota.reset_at - now)
                out.append((b"ratelimit-policy", policy))
                out.append((b"ratelimit", b"%s;r=%d;t=%d" % (name, remaining,
                                                            delay if delay > 0 else 0)))
            if self._legacy:
                out.append((b"x-ratelimit-limit", b"%d" % quota.limit.amount))
                out.append((b"x-ratelimit-remaining", b"%d" % remaining))
                out.append((b"x-ratelimit-reset", b"%d" % math.ceil(quota.reset_at)))
            return out
        names = _ASGI_NAMES
        return [(names[name], value.encode())
                for name, value in self.render(decision, shadow=shadow)]

    def _policy_bytes(self, name: str, quota: int, window: int) -> tuple[bytes, bytes]:
        cache_key = (name, quota, window)
        found = self._bytes_cache.get(cache_key)
        if found is None:
            text_name, text_policy = self._policy(name, quota, window)
            if len(self._bytes_cache) > 4096:
                self._bytes_cache.clear()
            found = self._bytes_cache[cache_key] = (text_name.encode(), text_policy.encode())
        return found

    def render(self, decision: Decision, now: float | None = None, *,
               shadow: bool = False) -> list[tuple[str, str]]:
        """Header fields for *decision*, as ``(name, value)`` strings.

        *shadow*: the request goes through although refused (shadow mode), so the quota
        fields are sent but no ``Retry-After``.
        """
        quotas = decision.quotas
        if len(quotas) == 1 and decision.allowed and now is None:
            return self._render_one(decision)
        out: list[tuple[str, str]] = []
        # "none" drops the quota fields, not Retry-After: that belongs to the 429 itself
        # (RFC 6585), and a client told to retry needs to know when.
        if not quotas:
            return out
        if now is None:
            now = time.time()
        remaining = [max(0, q.remaining) for q in quotas]  # r is non-negative in the draft
        if self._draft:
            items = decision.plan.items
            policies = []
            current = []
            for index, quota in enumerate(quotas):
                item = items[index]
                name, policy = self._policy(item.policy, item.limit.amount,
                                            item.limit.get_expiry())
                policies.append(policy)
                delay = math.ceil(quota.reset_at - now)
                current.append(f"{name};r={remaining[index]};t={delay if delay > 0 else 0}")
            if len(quotas) == 1:
                out.append(("RateLimit-Policy", policies[0]))
                out.append(("RateLimit", current[0]))
            else:
                out.append(("RateLimit-Policy", ", ".join(policies)))
                out.append(("RateLimit", ", ".join(current)))
        if self._legacy:
            # The most restrictive limit: refused first, then the least remaining, then
            # the latest reset.
            tight = 0
            for index in range(1, len(quotas)):
                a, b = quotas[index], quotas[tight]
                if (a.allowed, remaining[index], -a.reset_at) < (
                        b.allowed, remaining[tight], -b.reset_at):
                    tight = index
            tightest = quotas[tight]
            out.append(("X-RateLimit-Limit", str(tightest.limit.amount)))
            out.append(("X-RateLimit-Remaining", str(remaining[tight])))
            out.append(("X-RateLimit-Reset", str(math.ceil(tightest.reset_at))))
        if not decision.allowed and not shadow:
            # Never earlier than the end of a refused limit's window: retry_after alone
            # was trusted before, so a limiter reporting less (or 0) sent clients back
            # into a 429. default=: a refusal whose quotas all passed must not raise.
            wait = max((max(q.retry_after, q.reset_at - now) for q in quotas if not q.allowed),
                       default=0.0)
            out.append(("Retry-After", str(max(1, math.ceil(wait)))))
        return out

    def _render_one(self, decision: Decision) -> list[tuple[str, str]]:
        # The common case (one limit, allowed), without the general path's lists: the
        # same fields render() gives, tested equal.
        quota = decision.quotas[0]
        remaining = quota.remaining if quota.remaining > 0 else 0
        out: list[tuple[str, str]] = []
        if self._draft:
            item = decision.plan.items[0]
            name, policy = self._policy(item.policy, item.limit.amount,
                                        item.limit.get_expiry())
            delay = math.ceil(quota.reset_at - time.time())
            out.append(("RateLimit-Policy", policy))
            out.append(("RateLimit", f"{name};r={remaining};t={delay if delay > 0 else 0}"))
        if self._legacy:
            out.append(("X-RateLimit-Limit", str(quota.limit.amount)))
            out.append(("X-RateLimit-Remaining", str(remaining)))
            out.append(("X-RateLimit-Reset", str(math.ceil(quota.reset_at))))
        return out

    def _policy(self, name: str, quota: int, window: int) -> tuple[str, str]:
        """The serialised policy name and its ``RateLimit-Policy`` member, cached."""
        cache_key = (name, quota, window)
        found = self._policy_cache.get(cache_key)
        if found is None:
            if len(self._policy_cache) > 4096:  # bounded: policies are config, not input
                self._policy_cache.clear()
            serialised = sf_string(name)
            found = (serialised, f"{serialised};q={quota};w={window}")
            self._policy_cache[cache_key] = found
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
