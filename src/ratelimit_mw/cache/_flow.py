"""The response cache's logic, once, as flows of cache operations (no I/O).

Each flow yields operations in the package's one style (`ratelimit_mw._flow`): a call on
the store, ``lambda cache: cache.get(key)``, or `Sleep`. The WSGI middleware runs them
with `run` on a sync store, the ASGI one with `arun` on an async store; that is the only
difference between them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

from .._flow import Flow, Op, Sleep
from .._request import normalize_path
from .._rules import compile_template
from ..errors import ConfigurationError
from ._http import (
    KEYED_HEADERS,
    SAFE_METHODS,
    TOKEN,
    CacheRequest,
    Entry,
    Storability,
    cache_control,
    normalize_host,
    storable,
    vary_names,
)

__all__ = [
    "CachePolicy",
    "CacheRule",
    "Lookup",
    "after_unsafe",
    "bypass_reason",
    "conditional",
    "header_dict",
    "invalidate",
    "invalidate_path",
    "invalidate_prefix",
    "invalidates",
    "lookup",
    "refresh",
    "release",
    "response_ttl",
    "save",
    "stale_if_error",
]


@dataclass(frozen=True, slots=True)
class CacheRule:
    """Caching for the paths matching *path* (the same templates as `Rule`).

    *ttl* is used when the response states no freshness (``s-maxage``/``max-age``);
    ``exempt=True`` never caches the route; ``allow_authorized=True`` lets requests with
    ``Authorization`` or ``Cookie`` use the cache, for responses marked ``public`` or
    ``s-maxage`` only.

    Example::

        CacheRule("/articles/{id}", ttl=300)
        CacheRule("/me", exempt=True)
        CacheRule("/catalog/{rest:path}", ttl=60, allow_authorized=True)
    """

    path: str
    ttl: int | None = None
    exempt: bool = False
    allow_authorized: bool = False


class _Compiled(NamedTuple):
    template: str
    regex: re.Pattern[str] | None
    rule: CacheRule


class Lookup(NamedTuple):
    """The outcome of a lookup: a hit to serve, or what the miss must do."""

    entry: Entry | None      # a fresh entry to serve
    collapsed: bool          # served after waiting for another request's fetch
    lock: str | None         # the lock to release after storing (we fetch for others)
    token: str | None
    status: str              # Cache-Status for a miss or bypass
    stale: Entry | None = None  # the stored entry, past its freshness lifetime, if any
    #: Serve *entry* (stale, within stale-while-revalidate) and then revalidate it,
    #: holding *lock*.
    background: bool = False

    @property
    def revalidating(self) -> bool:
        """We fetch for others with a stale entry the app can be asked about."""
        return self.lock is not None and self.stale is not None and bool(
            self.stale.validators())


@dataclass(frozen=True)
class CachePolicy:
    """Route rules and limits of the response cache, checked at construction."""

    rules: tuple[CacheRule, ...] = ()
    default_ttl: int = 0
    allowed_hosts: frozenset[str] | None = None
    max_body_size: int = 1 << 20
    lock_timeout: float = 10.0
    lock_wait: float = 5.0
    poll_interval: float = 0.02
    extra_key_headers: tuple[str, ...] = ()
    keep_stale: int = 300
    targeted_field: str | None = None
    #: Every request header whose value is part of the key: `KEYED_HEADERS`, then the
    #: extra ones, lower-cased.
    key_headers: tuple[str, ...] = field(default=KEYED_HEADERS, init=False)
    _compiled: tuple[_Compiled, ...] = field(default=(), init=False, repr=False)

    @classmethod
    def build(cls, rules: Iterable[CacheRule], default_ttl: int,
              allowed_hosts: Iterable[str] | None, max_body_size: int,
              lock_wait: float, extra_key_headers: Iterable[str],
              keep_stale: int = 300, targeted_field: str | None = None) -> CachePolicy:
        """The policy from the middlewares' options (host names compared lower-cased)."""
        hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        if isinstance(extra_key_headers, str):  # one name would be keyed letter by letter
            raise ConfigurationError(f"extra_key_headers={extra_key_headers!r}: a list of "
                                     "header names")
        return cls(tuple(rules), default_ttl, hosts, max_body_size, lock_wait=lock_wait,
                   extra_key_headers=tuple(extra_key_headers), keep_stale=keep_stale,
                   targeted_field=targeted_field)

    def __post_init__(self) -> None:
        if isinstance(self.default_ttl, bool) or not isinstance(self.default_ttl, int) or (
                self.default_ttl < 0):
            raise ConfigurationError(f"default_ttl={self.default_ttl!r}: whole seconds >= 0")
        if self.targeted_field is not None:
            if not isinstance(self.targeted_field, str) or not TOKEN.fullmatch(
                    self.targeted_field) or self.targeted_field.lower() == "cache-control":
                raise ConfigurationError(f"targeted_field={self.targeted_field!r}: a header "
                                         "name such as 'CDN-Cache-Control'")
            object.__setattr__(self, "targeted_field", self.targeted_field.lower())
        if isinstance(self.keep_stale, bool) or not isinstance(self.keep_stale, int) or (
                self.keep_stale < 0):
            raise ConfigurationError(f"keep_stale={self.keep_stale!r}: whole seconds >= 0")
        if not isinstance(self.max_body_size, int) or self.max_body_size < 0:
            raise ConfigurationError(f"max_body_size={self.max_body_size!r}: bytes >= 0")
        for name in ("lock_timeout", "lock_wait", "poll_interval"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"{name}={value!r}: a positive number of seconds")
        compiled = []
        for rule in self.rules:
            if not isinstance(rule, CacheRule):
                raise ConfigurationError(f"rules: {rule!r} is not a CacheRule")
            if rule.ttl is not None and (not isinstance(rule.ttl, int) or rule.ttl < 0):
                raise ConfigurationError(f"CacheRule({rule.path!r}): ttl must be >= 0")
            template, regex = compile_template(rule.path)
            compiled.append(_Compiled(template, regex, rule))
        object.__setattr__(self, "_compiled", tuple(compiled))
        for name in self.extra_key_headers:
            if not isinstance(name, str) or not TOKEN.fullmatch(name):
                raise ConfigurationError(f"extra_key_headers: {name!r} is not a header name")
        extra = (name.lower() for name in self.extra_key_headers)
        object.__setattr__(self, "key_headers", tuple(dict.fromkeys((*KEYED_HEADERS, *extra))))

    def primary_key(self, request: CacheRequest) -> str | None:
        """The key of *request*'s URI under these options (hosts, keyed headers)."""
        return request.primary_key(self.allowed_hosts, self.key_headers)

    def rule_for(self, path: str) -> CacheRule | None:
        normalized = normalize_path(path)
        for template, regex, rule in self._compiled:
            if (regex.fullmatch(normalized) is not None) if regex else template == normalized:
                return rule
        return None


def lookup(policy: CachePolicy, request: CacheRequest, primary: str,
           connected: Callable[[], bool]) -> Flow[Lookup]:
    """Find a fresh entry for *request*, waiting (bounded) for a fetch already under way.

    Only one request per variant fetches from the app (single flight); the others poll
    the cache for its entry. They never receive another request's response directly: if
    the fetched response was not storable (private, Set-Cookie, another Vary variant),
    they find nothing and fetch their own. *connected* reads the store's circuit breaker
    (no I/O): while it is open a failed lock says nothing about another fetch.
    """
    deadline = time.monotonic() + policy.lock_wait
    started = time.time()
    waited = False
    waited_on: str | None = None
    read_again = False
    while True:
        record = yield _get(primary)
        vary = _vary_record(record)
        variant = request.variant_key(primary, vary) if vary is not None else None
        stale = None
        if variant is not None:
            entry = Entry.from_json((yield _get(variant)))
            # An entry stored or revalidated while we waited is the answer of the fetch
            # we waited for, even one to revalidate on every use (no-cache).
            now = time.time()
            if entry is not None and (entry.usable(now) or (
                    waited and entry.stored_at >= started)):
                return Lookup(entry, waited, None, None, "")
            stale = entry
            if entry is not None and entry.stale_within("stale-while-revalidate", now):
                # Served at once; one request (the lock's holder) revalidates it after
                # its response, the others only serve it.
                detail = "hit; detail=stale-while-revalidate"
                if request.method != "GET":
                    return Lookup(entry, False, None, None, detail)
                lock_name = variant + ":lock"
                token = yield _lock(lock_name, policy.lock_timeout)
                return Lookup(entry, False, lock_name if token else None, token, detail,
                              entry, token is not None)
        status = ("fwd=stale" if stale is not None else "fwd=uri-miss" if variant is None
                  else "fwd=vary-miss" if record else "fwd=miss")
        if request.method != "GET":
            # A response to a HEAD (or to a ``get``) is never stored, so such a request
            # neither holds nor waits for the lock: the GETs waiting behind a HEAD (a
            # health check) would find nothing and all call the app.
            return Lookup(None, False, None, None, status, stale)
        lock_name = (variant or primary) + ":lock"
        token = yield _lock(lock_name, policy.lock_timeout)
        if token is not None:
            if lock_name == waited_on:
                yield _unlock(lock_name, token)
                if not read_again:
                    # The fetch we waited for may have stored its entry (or its Vary
                    # record) between our last read and this lock: read once more.
                    read_again = True
                    continue
                # We waited for this very fetch and it left nothing for us (private,
                # Set-Cookie, an error status...): fetch beside the other waiters, not
                # holding the lock, or the waiters of an uncacheable URL would call the app
                # one after another until lock_wait ran out.
                return Lookup(None, False, None, None, "fwd=miss; detail=not-stored", stale)
            return Lookup(None, False, lock_name, token, status, stale)
        if not connected():
            # The store is down, so a failed lock is no sign of another fetch: waiting
            # would add lock_wait to every request of the outage.
            return Lookup(None, False, None, None, "fwd=miss; detail=cache-down")
        if time.monotonic() >= deadline:
            # The fetch under way takes too long: fetch ourselves rather than wait more.
            return Lookup(None, False, None, None, "fwd=miss; detail=lock-timeout", stale)
        waited = True
        waited_on = lock_name
        yield Sleep(policy.poll_interval)


def _get(key: str) -> Op:
    return lambda cache: cache.get(key)


def _lock(name: str, ttl: float) -> Op:
    return lambda cache: cache.lock(name, ttl)


def _unlock(name: str, token: str) -> Op:
    return lambda cache: cache.unlock(name, token)


def _vary_record(record: Any) -> tuple[str, ...] | None:
    """The Vary names of a URI record; ``None`` when there is none or it is damaged
    (``{"vary": 5}``, say): a miss, never an error."""
    if not isinstance(record, dict):
        return None
    vary = record.get("vary", ())
    if not isinstance(vary, list | tuple) or not all(isinstance(v, str) for v in vary):
        return None
    return tuple(vary)


def save(policy: CachePolicy, rule: CacheRule | None, request: CacheRequest, primary: str,
         status: int, headers: Sequence[tuple[str, str]], body: bytes,
         request_time: float | None = None, stale: Entry | None = None) -> Flow[bool]:
    """Store the response to *request* if a shared cache may, for as long as it may;
    stored? *request_time*: when the request went to the app (for its age). The answer
    to a HEAD is never stored, but it freshens the *stale* GET entry it matches."""
    if request.verb == "HEAD":
        if stale is None or not _head_matches(stale, status, headers):
            return False
        get = replace(request, method="GET")
        _, stored = yield from refresh(policy, rule, get, primary, stale, headers,
                                       time.time() if request_time is None else request_time)
        return stored
    verdict = _verdict(policy, rule, request, status, headers, request_time)
    if verdict.reason:
        return False
    entry = Entry.build(status, headers, body, verdict.ttl, age0=verdict.age,
                        targeted=verdict.targeted)
    return (yield from _store(policy, request, primary, entry))


def refresh(policy: CachePolicy, rule: CacheRule | None, request: CacheRequest,
            primary: str, stale: Entry, headers: Sequence[tuple[str, str]],
            request_time: float) -> Flow[tuple[Entry, bool]]:
    """*stale* after the app answered our conditional request with ``304 Not Modified``
    and *headers* (RFC 9111 §4.3.4): the entry to serve, and whether it was stored. A 304
    that forbids storing (``no-store``, say) drops the stored entry."""
    now = time.time()
    merged = stale.refreshed(headers, 0, now)
    verdict = _verdict(policy, rule, request, stale.status, merged.headers, request_time,
                       age_from=headers)
    entry = merged._replace(ttl=verdict.ttl, age0=verdict.age, targeted=verdict.targeted)
    if verdict.reason:
        vary = vary_names(entry.headers) or ()
        yield lambda cache: cache.delete(request.variant_key(primary, vary))
        return entry, False
    return entry, (yield from _store(policy, request, primary, entry))


def _head_matches(entry: Entry, status: int, headers: Sequence[tuple[str, str]]) -> bool:
    """Does the answer to a HEAD describe the stored GET *entry* (RFC 9111 §4.3.5): the
    same strong ETag, else the same Last-Modified, else (neither has a validator) the
    same Content-Length?"""
    if status != 200 or entry.status != 200:
        return False
    found = header_dict(headers)
    etag = found.get("etag")
    if etag is not None:
        return not entry.own_etag and not etag.startswith("W/") and etag == entry.etag
    modified = found.get("last-modified")
    if modified is not None:
        return modified == entry.header("last-modified")
    if entry.validators():
        return False
    length = found.get("content-length")
    return length is None or length == entry.header("content-length")


def _keep(policy: CachePolicy, entry: Entry) -> int:
    """Seconds an entry stays in the store after it goes stale: for revalidation, when
    it has a validator to ask the app about, and for as long as the response lets it be
    served stale (RFC 5861)."""
    return max(policy.keep_stale if entry.validators() else 0,
               entry.stale_for("stale-while-revalidate"), entry.stale_for("stale-if-error"))


def stale_if_error(found: Lookup, now: float) -> Entry | None:
    """The stale entry to serve if the app fails (5xx, or raises), if it may be."""
    stale = found.stale
    if stale is not None and stale.stale_within("stale-if-error", now):
        return stale
    return None


#: The statuses that count as the app failing, for stale-if-error (RFC 5861 §4).
ERROR_STATUSES = frozenset({500, 502, 503, 504})


def _store(policy: CachePolicy, request: CacheRequest, primary: str,
           entry: Entry) -> Flow[bool]:
    """Store *entry* under its variant key, and the Vary record under the URI; stored?"""
    ttl = entry.ttl + _keep(policy, entry)
    if ttl <= 0:
        return False
    vary = vary_names(entry.headers) or ()
    variant = request.variant_key(primary, vary)
    yield lambda cache: cache.set(variant, entry.to_json(), ttl)
    yield lambda cache: cache.set(primary, {"vary": list(vary)}, ttl)
    tag = _tag(primary)
    yield lambda cache: cache.tag(tag, variant, ttl)
    yield lambda cache: cache.tag(tag, primary, ttl)
    return True


def conditional(request_headers: Iterable[tuple[str, str]], stale: Entry,
                ) -> list[tuple[str, str]]:
    """The request headers (lower-case names) for asking the app about *stale*: the
    client's own preconditions replaced by the entry's validators. The client's are
    answered by the cache from the entry that results (`Entry.not_modified`)."""
    kept = [(n, v) for n, v in request_headers
            if n.lower() not in ("if-none-match", "if-modified-since")]
    return [*kept, *stale.validators()]


def release(found: Lookup) -> Flow[None]:
    """Free the single-flight lock *found* holds, if it holds one."""
    if found.lock is not None and found.token is not None:
        yield _unlock(found.lock, found.token)


#: Methods that never invalidate: the safe ones (RFC 9110 §9.2.1), OPTIONS (every CORS
#: preflight) and TRACE included.
_NEVER_INVALIDATE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def invalidates(method: str, status: int | None) -> bool:
    """Does this response to *method* invalidate its URI (RFC 9111 §4.4: an unsafe method
    and a non-error status)?"""
    return method not in _NEVER_INVALIDATE and status is not None and 200 <= status < 400


def after_unsafe(request: CacheRequest, status: int | None,
                 headers: Sequence[tuple[str, str]], primary: str | None,
                 path_of: Callable[[str], str] = lambda path: path) -> Flow[None]:
    """After a request with an unsafe method: if it succeeded, drop the entries of its
    URI, and of the same-origin URIs its ``Location`` and ``Content-Location`` name (RFC
    9111 §4.4). *path_of* turns a URL's path into the path keys hold (WSGI keys hold it
    decoded)."""
    if primary is None or not invalidates(request.verb, status):
        return
    yield from invalidate(primary)
    done = {_uri(primary)}
    for path in _same_origin_paths(request, headers):
        other = _primary(request.host or "", path_of(path), request.scheme)
        if other is not None and _uri(other) not in done:
            done.add(_uri(other))
            yield from invalidate(other)


def _same_origin_paths(request: CacheRequest, headers: Sequence[tuple[str, str]],
                       ) -> list[str]:
    """The paths of the ``Location`` and ``Content-Location`` URLs of a response that
    have the request's scheme and host (a URL of another origin is never ours to drop)."""
    host = normalize_host(request.host, request.scheme)
    base = f"{request.scheme}://{request.host}{request.path}"
    paths = []
    for name, value in headers:
        if name.lower() not in ("location", "content-location"):
            continue
        try:
            url = urlsplit(urljoin(base, value.strip()))
        except ValueError:  # not a URL: nothing to drop
            continue
        if url.scheme == request.scheme and host is not None and normalize_host(
                url.netloc, url.scheme) == host:
            paths.append(url.path or "/")
    return paths


def invalidate(primary: str) -> Flow[int]:
    """Drop every entry of the URI of *primary* (all variants and queries of the path,
    as RFC 9111 §4.4 asks after a successful unsafe request); the number of keys removed."""
    tag = _tag(primary)
    return int((yield lambda cache: cache.invalidate_tag(tag)))


def invalidate_path(host: str, path: str, scheme: str) -> Flow[int]:
    """`invalidate` for *path* on *host*; 0 when *host* is not a valid host."""
    primary = _primary(host, path, scheme)
    if primary is None:
        return 0
    return (yield from invalidate(primary))


def invalidate_prefix(host: str, path_prefix: str, scheme: str) -> Flow[int]:
    """Drop every entry whose path on *host* starts with *path_prefix*; the keys removed."""
    primary = _primary(host, path_prefix, scheme)
    if primary is None:
        return 0
    uri = _uri(primary)
    return int((yield lambda cache: cache.delete_prefix(uri)))


def _primary(host: str, path: str, scheme: str) -> str | None:
    return CacheRequest("GET", scheme, host, path, "", {}).primary_key(None)


def _uri(primary: str) -> str:
    """The readable head of a key, ``scheme://host/path``: what prefixes are matched on."""
    return primary.split("#", 1)[0]


def _tag(primary: str) -> str:
    """The tag that lists every key stored for the URI of *primary*."""
    return _uri(primary) + "#tag"


def response_ttl(policy: CachePolicy, rule: CacheRule | None, request: CacheRequest,
                 status: int, headers: Sequence[tuple[str, str]]) -> int:
    """Seconds the response stays fresh once stored; 0: stale at once, or not stored."""
    return _verdict(policy, rule, request, status, headers, None).ttl


def _verdict(policy: CachePolicy, rule: CacheRule | None, request: CacheRequest,
             status: int, headers: Sequence[tuple[str, str]], request_time: float | None,
             age_from: Sequence[tuple[str, str]] | None = None) -> Storability:
    default = rule.ttl if rule is not None and rule.ttl is not None else policy.default_ttl
    allow_authorized = rule.allow_authorized if rule is not None else False
    return storable(request, status, headers, default_ttl=default,
                    allow_authorized=allow_authorized, request_time=request_time,
                    revalidate=policy.keep_stale > 0, age_from=age_from,
                    targeted=policy.targeted_field)


def bypass_reason(policy: CachePolicy, rule: CacheRule | None, request: CacheRequest,
                  ) -> str | None:
    """Why *request* must not use the cache at all, or ``None``."""
    if request.verb not in SAFE_METHODS:
        return "method"
    if rule is not None and rule.exempt:
        return "exempt"
    directives = cache_control(request.header("cache-control"))
    if "no-cache" in directives or "no-store" in directives:
        return "request-no-cache"
    if request.authorized and not (rule is not None and rule.allow_authorized):
        return "authorized"
    return None


def header_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names; repeated fields joined with ``", "``.

    The values of a name are collected and joined once: joining each repeated line onto
    the value so far would copy it again per line, quadratic in the lines a client sends.
    """
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name.lower(), []).append(value)
    return {name: ", ".join(found) for name, found in values.items()}
