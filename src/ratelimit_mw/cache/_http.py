"""The rules of a shared HTTP cache (RFC 9111), as pure functions. No I/O.

The middlewares ask three questions of this module: under which key may this request use
the cache (`CacheRequest.primary_key`, `CacheRequest.variant_key`), may this response be
stored and for how long (`storable`), and what does a hit look like (`Entry.hit`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote

__all__ = [
    "CACHEABLE_STATUSES",
    "CacheRequest",
    "Entry",
    "cache_control",
    "normalize_query",
    "storable",
]

#: Final statuses a shared cache may store by default (RFC 9110 §15.1) — never 429/5xx.
CACHEABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-connection"})
#: Never stored: per-request or per-client fields, recomputed on every response.
NOT_STORED = frozenset({"set-cookie", "ratelimit", "ratelimit-policy", "x-ratelimit-limit",
                        "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after", "age",
                        "cache-status", "date"}) | HOP_BY_HOP
#: Field-name prefixes never stored: every RateLimit* and X-RateLimit-* field, whatever its
#: draft (``RateLimit-Remaining``, ``X-RateLimit-Used``, ...), not only the ones we emit,
#: so a hit never replays a stale quota.
NOT_STORED_PREFIXES = ("ratelimit", "x-ratelimit-")
#: A field name (RFC 9110 token) and a value a server may send (no CR, LF or NUL).
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[^\r\n\0]*")
#: Request headers apps use to build URLs without listing them in Vary: part of every key,
#: so a forged value can only ever reach its own entry (the classic cache-poisoning path).
#: The middlewares' ``extra_key_headers`` adds the ones an app of its own reads.
KEYED_HEADERS = ("x-forwarded-host", "x-forwarded-proto", "x-forwarded-scheme",
                 "x-forwarded-prefix", "x-forwarded-port", "x-forwarded-server", "forwarded",
                 "x-original-host", "x-original-url", "x-rewrite-url",
                 "x-http-method-override", "x-host")
SAFE_METHODS = frozenset({"GET", "HEAD"})
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}"
                   r"[a-z0-9])?|\[[0-9a-f:.]+\]")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def cache_control(value: str | None) -> dict[str, str | None]:
    """Parse a ``Cache-Control`` field: directive names lower-cased, quoted values unquoted.

    >>> cache_control('Public, MAX-AGE=60, no-cache="set-cookie"')
    {'public': None, 'max-age': '60', 'no-cache': 'set-cookie'}
    """
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    for part in re.findall(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+', value):
        name, sep, arg = part.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        arg = arg.strip()
        if arg.startswith('"') and arg.endswith('"') and len(arg) >= 2:
            arg = arg[1:-1]
        directives.setdefault(name, arg if sep else None)
    return directives


def _seconds(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None  # an invalid delta-seconds makes the directive void (RFC 9111 §1.2.2)
    return int(value)


def _expires_in(expires: str, date: str | None) -> int:
    """Seconds from the response's ``Date`` (else now) to ``Expires``; 0 for an invalid
    date such as ``"0"``, which means "already expired" (RFC 9111 §5.3)."""
    until = _http_date(expires)
    if until is None:
        return 0
    start = _http_date(date) if date else None
    return max(0, int(until - (time.time() if start is None else start)))


def _http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def normalize_query(query: str) -> str:
    """The one normal form of a query in cache keys: pairs decoded (``+`` is a space),
    sorted by name only, re-encoded with ``quote(safe="-._~")``, joined by ``&``.

    The sort is stable, so the values of a repeated name keep their order: frameworks
    answer ``?a=1&a=2`` and ``?a=2&a=1`` differently (Starlette reads the last value,
    Flask the first), so the two are two entries.

    >>> normalize_query("b=2&a=%41&a=1&c")
    'a=A&a=1&b=2&c='
    """
    if not query:
        return ""
    pairs = sorted(parse_qsl(query, keep_blank_values=True), key=lambda pair: pair[0])
    return "&".join(f"{quote(k, safe='-._~')}={quote(v, safe='-._~')}" for k, v in pairs)


def normalize_host(host: str | None, scheme: str) -> str | None:
    """Lower-cased host with the scheme's default port removed; ``None`` if malformed."""
    if not host:
        return None
    host = host.strip().lower().rstrip(".")
    name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not name:  # no port given
        name, port = host, ""
    if port and (not port.isdigit() or int(port) > 65535):
        return None
    if not _HOST.fullmatch(name):
        return None
    if port == _DEFAULT_PORTS.get(scheme):
        port = ""
    return f"{name}:{port}" if port else name


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """What the cache needs to know about a request; built by the adapters."""

    method: str  # as the client sent it: `verb` is the method the cache acts on
    scheme: str
    host: str | None
    path: str
    query: str
    headers: Mapping[str, str]  # lower-case names

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def verb(self) -> str:
        """The method upper-cased, as werkzeug reads it: ``get`` is looked up as a GET and
        ``post`` invalidates as a POST, under ASGI and WSGI alike."""
        return self.method.upper()

    @property
    def authorized(self) -> bool:
        """Carries credentials: ``Authorization`` or ``Cookie``."""
        return "authorization" in self.headers or "cookie" in self.headers

    def primary_key(self, allowed_hosts: frozenset[str] | None,
                    key_headers: Sequence[str] = KEYED_HEADERS) -> str | None:
        """The key of the URI (without Vary), or ``None`` when the host is not valid.

        The method is always GET: HEAD is served from the GET entry. The value of each of
        *key_headers* (lower-case names) the request carries is part of the key.
        """
        host = normalize_host(self.host, self.scheme)
        if host is None or (allowed_hosts is not None and host not in allowed_hosts):
            return None
        keyed = "".join(f"|{name}={self.headers[name]}" for name in key_headers
                        if name in self.headers)
        base = f"GET {self.scheme}://{host}{self.path}?{normalize_query(self.query)}"
        # Readable up to the path (for invalidation by prefix), hashed after it.
        return f"{self.scheme}://{host}{self.path}#{_digest(base + keyed)}"

    def variant_key(self, primary: str, vary: Sequence[str]) -> str:
        """The key of this request's variant: every Vary'd header's value, absent ≠ empty."""
        if not vary:
            return primary + ":v"
        parts = [f"{name}\0{'' if v is None else 'v' + v}" for name in vary
                 for v in (self.headers.get(name),)]
        return f"{primary}:v:{_digest(chr(1).join(parts))}"


def vary_names(headers: Iterable[tuple[str, str]]) -> tuple[str, ...] | None:
    """The response's Vary names, sorted and lower-cased; ``None`` for ``Vary: *``."""
    names: set[str] = set()
    for name, value in headers:
        if name.lower() == "vary":
            for item in value.split(","):
                item = item.strip().lower()
                if item == "*":
                    return None
                if item:
                    names.add(item)
    return tuple(sorted(names))


class Storability(NamedTuple):
    ttl: int           # seconds to keep it; 0: do not store
    reason: str        # why not, for Cache-Status detail and logs


def storable(request: CacheRequest, status: int, headers: Sequence[tuple[str, str]],
             *, default_ttl: int, allow_authorized: bool) -> Storability:
    """May a shared cache store this response, and for how long (RFC 9111 §3)."""
    if request.method != "GET":
        # Spelled GET, not only read as one: the app may answer ``get`` as a method of its
        # own (Starlette answers 405), and that answer must never become GET's entry.
        return Storability(0, "method")
    if status not in CACHEABLE_STATUSES:
        return Storability(0, "status")
    lowered = [(name.lower(), value) for name, value in headers]
    response_cc = cache_control(", ".join(v for n, v in lowered if n == "cache-control"))
    request_cc = cache_control(request.header("cache-control"))
    if "no-store" in response_cc or "no-store" in request_cc:
        return Storability(0, "no-store")
    if "private" in response_cc:
        return Storability(0, "private")
    if "no-cache" in response_cc:
        return Storability(0, "no-cache")  # we do not revalidate: never serve it unchecked
    if any(name == "set-cookie" for name, _ in lowered):
        return Storability(0, "set-cookie")
    if vary_names(headers) is None:
        return Storability(0, "vary-star")
    shared_max_age = _seconds(response_cc.get("s-maxage"))
    if request.authorized and not (allow_authorized and (
            "public" in response_cc or shared_max_age is not None)):
        return Storability(0, "authorized")
    ttl = shared_max_age
    if ttl is None:
        ttl = _seconds(response_cc.get("max-age"))
    if ttl is None:
        # Expires is explicit freshness too (RFC 9111 §4.2.1), so it beats the rule's
        # ttl (a heuristic): an Expires in the past is never stored.
        expires = next((v for n, v in lowered if n == "expires"), None)
        if expires is not None:
            ttl = _expires_in(expires, next((v for n, v in lowered if n == "date"), None))
    if ttl is None:
        ttl = default_ttl
    age = _seconds(next((v for n, v in lowered if n == "age"), None)) or 0
    ttl -= age
    if ttl <= 0:
        return Storability(0, "stale")
    return Storability(ttl, "")


def etag_for(body: bytes) -> str:
    """A deterministic strong ETag: the same body always gets the same tag."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison of ``If-None-Match`` against *etag* (RFC 9110 §13.1.2)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


class Entry(NamedTuple):
    """A stored response. JSON: repeated headers kept in order, body base64."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float
    ttl: int
    etag: str

    @classmethod
    def build(cls, status: int, headers: Sequence[tuple[str, str]], body: bytes,
              ttl: int, now: float | None = None) -> Entry:
        # The fields a Connection header lists are hop-by-hop too (RFC 9110 §7.6.1):
        # never stored, so never replayed to other clients.
        listed = {option.strip().lower() for name, value in headers
                  if name.lower() == "connection" for option in value.split(",")}
        kept = tuple((name, value) for name, value in headers
                     if not _not_stored(name.lower(), listed))
        etag = next((value for name, value in kept if name.lower() == "etag"), None)
        if etag is None:
            etag = etag_for(body)
            kept += (("etag", etag),)
        return cls(status, kept, body, time.time() if now is None else now, ttl, etag)

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "status": self.status, "headers": [list(h) for h in self.headers],
                "body": base64.b64encode(self.body).decode("ascii"),
                "stored_at": self.stored_at, "ttl": self.ttl, "etag": self.etag}

    @classmethod
    def from_json(cls, data: Any) -> Entry | None:
        """The entry, or ``None`` for anything that is not one (never raises)."""
        try:
            if data.get("v") != 1:
                return None
            entry = cls(int(data["status"]),
                        tuple((str(n), str(v)) for n, v in data["headers"]),
                        base64.b64decode(data["body"], validate=True),
                        float(data["stored_at"]), int(data["ttl"]), str(data["etag"]))
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
        # A damaged entry is a miss, never a 500: the WSGI hit cannot spell a status we
        # never store (HTTPStatus(299) raises), the ASGI hit cannot encode a header value
        # that is not latin-1, and CR/LF in a field would be header injection.
        if entry.status not in CACHEABLE_STATUSES or not all(
                TOKEN.fullmatch(n) and _FIELD_VALUE.fullmatch(v) and _latin1(v)
                for n, v in entry.headers):
            return None
        return entry

    def age(self, now: float) -> int:
        return max(0, int(now - self.stored_at))

    def fresh(self, now: float) -> bool:
        return self.age(now) < self.ttl

    def hit(self, request: CacheRequest, now: float, *, collapsed: bool = False,
            ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body to send for *request* from this entry."""
        age = self.age(now)
        status_field = f"ratelimit-mw; hit; ttl={self.ttl - age}" + (
            "; collapsed" if collapsed else "")
        # Preconditions apply only where the response would be 2xx (RFC 9110 §13.2.1):
        # ``If-None-Match: *`` on a cached 404 (or 301) gets that 404, never a 304.
        if 200 <= self.status < 300 and etag_matches(request.header("if-none-match"),
                                                     self.etag):
            kept = [(n, v) for n, v in self.headers if n.lower() in _NOT_MODIFIED_FIELDS]
            return 304, [*kept, ("age", str(age)), ("cache-status", status_field)], b""
        headers = [*self.headers, ("age", str(age)), ("cache-status", status_field)]
        return self.status, headers, b"" if request.verb == "HEAD" else self.body


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _not_stored(name: str, listed: set[str]) -> bool:
    return name in NOT_STORED or name in listed or name.startswith(NOT_STORED_PREFIXES)


#: What a 304 carries (RFC 9110 §15.4.5).
_NOT_MODIFIED_FIELDS = frozenset({"cache-control", "content-location", "date", "etag",
                                  "expires", "vary"})
