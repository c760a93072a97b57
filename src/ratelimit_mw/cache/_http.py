"""The rules of a shared HTTP cache (RFC 9111), as pure functions. No I/O.

The middlewares ask three questions of this module: under which key may this request use
the cache (`CacheRequest.primary_key`, `CacheRequest.variant_key`), may this response be
stored and for how long (`storable`), and what does a hit look like (`Entry.hit`).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote

__all__ = [
    "CACHEABLE_STATUSES",
    "CacheRequest",
    "Entry",
    "Storability",
    "cache_control",
    "normalize_host",
    "normalize_query",
    "response_directives",
    "sf_directives",
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
                        "cache-status"}) | HOP_BY_HOP
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


_SF_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")
_SF_BARE = re.compile(r"-?\d{1,15}(?:\.\d{1,3})?|[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*")
_SF_PARAMS = re.compile(
    r"""(?:;\s*[a-z*][a-z0-9_.*-]*(?:=(?:"(?:[^"\\]|\\["\\])*"|\?[01]|"""
    r"""[-\w.*:/]+))?)*""")


def sf_directives(value: str) -> dict[str, str | None] | None:
    """A targeted field (RFC 9213) as cache directives: a Structured Fields Dictionary
    (RFC 8941), each member a directive; ``None`` when it is empty or does not parse,
    and is then ignored. ``?0`` (false) drops a directive, ``?1`` is one without a value;
    parameters are ignored.

    >>> sf_directives('max-age=600, must-revalidate, no-cache="set-cookie"')
    {'max-age': '600', 'must-revalidate': None, 'no-cache': 'set-cookie'}
    """
    text = value.strip(" \t")
    directives: dict[str, str | None] = {}
    while text:
        key = _SF_KEY.match(text)
        if key is None:
            return None
        text = text[key.end():]
        found: str | None = None
        keep = True
        if text.startswith("="):
            text = text[1:]
            if text.startswith('"'):
                string = re.match(r'"((?:[^"\\]|\\["\\])*)"', text)
                if string is None:
                    return None
                found = re.sub(r'\\(["\\])', r"\1", string.group(1))
                text = text[string.end():]
            elif text[:2] in ("?0", "?1"):
                keep = text[:2] == "?1"
                text = text[2:]
            else:
                bare = _SF_BARE.match(text)
                if bare is None:
                    return None
                found = bare.group()
                text = text[bare.end():]
        params = _SF_PARAMS.match(text)  # matches, if only the empty string
        text = text[params.end():] if params else text
        if keep:
            directives[key.group()] = found
        else:
            directives.pop(key.group(), None)
        text = text.lstrip(" \t")
        if not text:
            break
        if not text.startswith(","):
            return None
        text = text[1:].lstrip(" \t")
        if not text:
            return None  # a trailing comma
    return directives or None


def response_directives(headers: Iterable[tuple[str, str]], targeted: str | None = None,
                        ) -> tuple[dict[str, str | None], str]:
    """The cache directives of a response, and the targeted field they come from (``""``:
    ``Cache-Control``). A valid, non-empty *targeted* field (RFC 9213, a lower-case name)
    replaces ``Cache-Control`` and ``Expires`` for this cache."""
    pairs = [(name.lower(), value) for name, value in headers]
    if targeted:
        values = [v for n, v in pairs if n == targeted]
        parsed = sf_directives(", ".join(values)) if values else None
        if parsed is not None:
            return parsed, targeted
    return cache_control(", ".join(v for n, v in pairs if n == "cache-control")), ""


def _seconds(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None  # an invalid delta-seconds makes the directive void (RFC 9111 §1.2.2)
    return int(value)


def _expires_in(expires: str, date: str | None, now: float) -> int:
    """Seconds from the response's ``Date`` (else now) to ``Expires``; 0 for an invalid
    date such as ``"0"``, which means "already expired" (RFC 9111 §5.3)."""
    until = http_date(expires)
    if until is None:
        return 0
    start = http_date(date) if date else None
    return max(0, int(until - (now if start is None else start)))


_MONTHS = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(\d\d):(\d\d):(\d\d)"
#: The three forms of an HTTP date (RFC 9110 §5.6.7), case-sensitive, one line: the
#: preferred IMF-fixdate, and the obsolete RFC 850 and asctime forms a recipient must
#: accept. Anything else (a two-digit year in an IMF-fixdate, dashes, no comma, a zone
#: other than GMT) is not a date.
_IMF_FIXDATE = re.compile(rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) {_MONTHS} (\d{{4}}) "
                          rf"{_TIME} GMT")
_RFC850 = re.compile(rf"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
                     rf"(\d\d)-{_MONTHS}-(\d\d) {_TIME} GMT")
_ASCTIME = re.compile(rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_MONTHS} ([ \d]\d) {_TIME} (\d{{4}})")
_MONTH_NUMBER = {name: n for n, name in enumerate(_MONTHS[1:-1].split("|"), 1)}


def http_date(value: str | None, now: float | None = None) -> float | None:
    """The POSIX time of an HTTP date, or ``None`` if *value* is not one (RFC 9110 §5.6.7).

    >>> http_date("Sun, 06 Nov 1994 08:49:37 GMT")
    784111777.0
    >>> http_date("Sun, 06-Nov-1994 08:49:37 GMT") is None
    True
    """
    if value is None:
        return None
    if found := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = found.groups()
    elif found := _RFC850.fullmatch(value):
        day, month, short, hour, minute, second = found.groups()
        # A two-digit year more than 50 years ahead is the latest past year ending so.
        this_year = time.gmtime(time.time() if now is None else now).tm_year
        full = this_year // 100 * 100 + int(short)
        year = str(full - 100 if full > this_year + 50 else full)
    elif found := _ASCTIME.fullmatch(value):
        month, day, hour, minute, second, year = found.groups()
    else:
        return None
    try:
        parts = (int(year), _MONTH_NUMBER[month], int(day), int(hour), int(minute),
                 int(second))
        if not (1 <= parts[2] <= 31 and parts[3] < 24 and parts[4] < 60 and parts[5] < 61):
            return None
        time.strptime(f"{parts[0]:04d}-{parts[1]:02d}-{parts[2]:02d}", "%Y-%m-%d")
    except ValueError:  # 31 Feb, say
        return None
    return float(calendar.timegm((*parts, 0, 0, 0)))


def age_value(headers: Iterable[tuple[str, str]]) -> int:
    """The ``Age`` a response arrived with (RFC 9111 §5.1): the first member of the first
    field; 0 when that is not a whole number (``1800a``, ``-5``), which is ignored."""
    value = next((v for n, v in headers if n.lower() == "age"), None)
    if value is None:
        return 0
    return _seconds(value.split(",", 1)[0]) or 0


def initial_age(headers: Sequence[tuple[str, str]], request_time: float,
                response_time: float) -> float:
    """The corrected initial age of a response received at *response_time* for a request
    sent at *request_time* (RFC 9111 §4.2.3): the larger of its apparent age (from
    ``Date``) and its ``Age`` plus the response delay."""
    date = http_date(next((v for n, v in headers if n.lower() == "date"), None))
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    corrected = age_value(headers) + max(0.0, response_time - request_time)
    return max(apparent, corrected)


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
    ttl: int           # seconds it stays fresh once stored; 0: stale at once
    reason: str        # why not, for Cache-Status detail and logs; "": store it
    age: int = 0       # its corrected initial age (RFC 9111 §4.2.3)
    targeted: str = ""  # the targeted field its directives came from; "": Cache-Control


def has_validator(headers: Iterable[tuple[str, str]]) -> bool:
    """Does the response carry a validator the app can be asked about (RFC 9110 §8.8)?"""
    return any(name.lower() in ("etag", "last-modified") for name, _ in headers)


def storable(request: CacheRequest, status: int, headers: Sequence[tuple[str, str]],
             *, default_ttl: int, allow_authorized: bool, request_time: float | None = None,
             now: float | None = None, revalidate: bool = False,
             age_from: Sequence[tuple[str, str]] | None = None,
             targeted: str | None = None) -> Storability:
    """May a shared cache store this response, and for how long fresh (RFC 9111 §3).

    With *revalidate* (the cache keeps stale entries for revalidation) a response that
    is stale at once (``no-cache``, ``max-age=0``, an old ``Age``) is stored, ttl 0, when
    it has a validator: each use asks the app with a conditional request. *age_from*:
    the headers the age is read from (a 304's, for a refreshed entry), if not *headers*.
    *targeted*: the targeted field (RFC 9213) that, when valid, replaces
    ``Cache-Control`` and ``Expires``.
    """
    now = time.time() if now is None else now
    if request.method != "GET":
        # Spelled GET, not only read as one: the app may answer ``get`` as a method of its
        # own (Starlette answers 405), and that answer must never become GET's entry.
        return Storability(0, "method")
    if status not in CACHEABLE_STATUSES:
        return Storability(0, "status")
    lowered = [(name.lower(), value) for name, value in headers]
    response_cc, used = response_directives(lowered, targeted)
    request_cc = cache_control(request.header("cache-control"))
    if "no-store" in response_cc or "no-store" in request_cc:
        return Storability(0, "no-store")
    if "private" in response_cc:
        return Storability(0, "private")
    validator = revalidate and has_validator(headers)
    if "no-cache" in response_cc and not validator:
        return Storability(0, "no-cache")  # only ever served after a revalidation
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
    if ttl is None and not used:
        # Expires is explicit freshness too (RFC 9111 §4.2.1), so it beats the rule's
        # ttl (a heuristic): an Expires in the past is never stored.
        expires = next((v for n, v in lowered if n == "expires"), None)
        if expires is not None:
            ttl = _expires_in(expires, next((v for n, v in lowered if n == "date"), None),
                              now)
    if ttl is None:
        ttl = default_ttl
    # Whole seconds, as Age itself is: a response delay of a few milliseconds does not
    # take a second off its freshness.
    age = int(initial_age(headers if age_from is None else age_from,
                          now if request_time is None else request_time, now))
    if "no-cache" in response_cc:
        ttl = 0  # stored for its validator: stale at once
    remaining = max(0, ttl - age)
    if remaining <= 0 and not validator:
        return Storability(0, "stale", age, used)
    return Storability(remaining, "", age, used)


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
    """A stored response. JSON: repeated headers kept in order, body base64.

    *ttl* is the seconds it stays fresh from *stored_at* (when it was received); *age0*
    its age then (RFC 9111 §4.2.3), so ``Age`` on a hit is ``age0`` plus the time
    since. *own_etag*: the ETag is our digest of the body, not the app's, so it is never
    sent to the app in a conditional request.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float
    ttl: int
    etag: str
    age0: int = 0
    own_etag: bool = True
    targeted: str = ""  # the targeted field its directives come from; "": Cache-Control

    @classmethod
    def build(cls, status: int, headers: Sequence[tuple[str, str]], body: bytes,
              ttl: int, now: float | None = None, age0: int = 0, targeted: str = "",
              ) -> Entry:
        now = time.time() if now is None else now
        # The fields a Connection header lists are hop-by-hop too (RFC 9110 §7.6.1):
        # never stored, so never replayed to other clients.
        listed = {option.strip().lower() for name, value in headers
                  if name.lower() == "connection" for option in value.split(",")}
        kept = tuple((name, value) for name, value in headers
                     if not _not_stored(name.lower(), listed))
        etag = next((value for name, value in kept if name.lower() == "etag"), None)
        own = etag is None
        if etag is None:
            etag = etag_for(body)
            kept += (("etag", etag),)
        date = next((value for name, value in kept if name.lower() == "date"), None)
        if http_date(date) is None:
            # The server below the app dates the response as it sends it (RFC 9110
            # §6.6.1); a hit replays that moment, not the moment it is served.
            kept = (*((n, v) for n, v in kept if n.lower() != "date"),
                    ("date", formatdate(now, usegmt=True)))
        return cls(status, kept, body, now, ttl, etag, age0, own, targeted)

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "status": self.status, "headers": [list(h) for h in self.headers],
                "body": base64.b64encode(self.body).decode("ascii"),
                "stored_at": self.stored_at, "ttl": self.ttl, "etag": self.etag,
                "age0": self.age0, "own": self.own_etag, "tf": self.targeted}

    @classmethod
    def from_json(cls, data: Any) -> Entry | None:
        """The entry, or ``None`` for anything that is not one (never raises)."""
        try:
            if data.get("v") != 1:
                return None
            entry = cls(int(data["status"]),
                        tuple((str(n), str(v)) for n, v in data["headers"]),
                        base64.b64decode(data["body"], validate=True),
                        float(data["stored_at"]), int(data["ttl"]), str(data["etag"]),
                        # Absent from entries stored before revalidation: age 0, and an
                        # ETag the app may not know.
                        int(data.get("age0", 0)), bool(data.get("own", True)),
                        str(data.get("tf", "")))
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

    def resident(self, now: float) -> float:
        """Seconds since it was stored (or last revalidated)."""
        return max(0.0, now - self.stored_at)

    def age(self, now: float) -> int:
        """Its current age (RFC 9111 §4.2.3): the age it arrived with, plus the time since."""
        return self.age0 + int(self.resident(now))

    def fresh(self, now: float) -> bool:
        return self.resident(now) < self.ttl

    def directives(self) -> dict[str, str | None]:
        """Its cache directives: from its targeted field if one was in effect."""
        return response_directives(self.headers, self.targeted or None)[0]

    def usable(self, now: float) -> bool:
        """May it be served without asking the app: fresh, and not ``no-cache``."""
        if not self.fresh(now):
            return False
        # Every hit asks this: parse the directives only when the text could hold one.
        field = self.targeted or "cache-control"
        if not any("no-cache" in v.lower() for n, v in self.headers if n.lower() == field):
            return True
        return "no-cache" not in self.directives()

    def validators(self) -> list[tuple[str, str]]:
        """The conditional request fields that ask the app whether this entry still holds
        (RFC 9111 §4.3.1): its ETag if the app gave it, its ``Last-Modified``."""
        found = [] if self.own_etag else [("if-none-match", self.etag)]
        modified = self.header("last-modified")
        if modified is not None:
            found.append(("if-modified-since", modified))
        return found

    def may_serve_stale(self) -> bool:
        """May a shared cache serve it stale at all (RFC 9111 §4.2.4, §5.2.2): not with
        ``no-cache``, ``must-revalidate``, ``proxy-revalidate`` or ``s-maxage``."""
        return not any(d in self.directives() for d in (
            "no-cache", "must-revalidate", "proxy-revalidate", "s-maxage"))

    def stale_for(self, directive: str) -> int:
        """Seconds past its freshness it may be served under *directive*
        (``stale-while-revalidate`` or ``stale-if-error``, RFC 5861); 0 when it may not."""
        if not self.may_serve_stale():
            return 0
        return _seconds(self.directives().get(directive)) or 0

    def stale_within(self, directive: str, now: float) -> bool:
        """Is it stale, but by no more than *directive* allows?"""
        staleness = self.resident(now) - self.ttl
        return 0 <= staleness <= self.stale_for(directive) and self.stale_for(directive) > 0

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name), None)

    def refreshed(self, headers: Sequence[tuple[str, str]], ttl: int, now: float,
                  age0: int = 0) -> Entry:
        """This entry after a ``304 Not Modified`` with *headers* (RFC 9111 §4.3.4): each
        field of the 304 replaces the stored field of that name (``Content-Length`` and
        the fields never stored excepted), the body is kept, freshness starts again."""
        listed = {option.strip().lower() for name, value in headers
                  if name.lower() == "connection" for option in value.split(",")}
        update = [(n, v) for n, v in headers
                  if not _not_stored(n.lower(), listed) and n.lower() != "content-length"]
        names = {n.lower() for n, _ in update}
        kept = tuple((n, v) for n, v in self.headers if n.lower() not in names)
        merged = (*kept, *update)
        etag = next((v for n, v in update if n.lower() == "etag"), None)
        return self._replace(headers=merged, stored_at=now, ttl=ttl, age0=age0,
                             etag=self.etag if etag is None else etag,
                             own_etag=self.own_etag and etag is None)

    def not_modified(self, request: CacheRequest) -> bool:
        """Does *request*'s own precondition say it has this entry already (RFC 9111
        §4.3.2)? ``If-None-Match`` (weak comparison) if it sent one, else
        ``If-Modified-Since`` against ``Last-Modified`` (else ``Date``). Preconditions
        apply only where the response would be 2xx (RFC 9110 §13.2.1): ``If-None-Match:
        *`` on a cached 404 (or 301) gets that 404, never a 304."""
        if_none_match = request.header("if-none-match")
        since_field = request.header("if-modified-since")
        if if_none_match is None and since_field is None:
            return False
        if not 200 <= self.status < 300 or request.verb not in SAFE_METHODS:
            return False
        if if_none_match is not None:
            return etag_matches(if_none_match, self.etag)
        since = http_date(since_field)
        if since is None:
            return False
        modified = http_date(self.header("last-modified") or self.header("date"))
        return modified is not None and modified <= since

    def hit(self, request: CacheRequest, now: float, *, collapsed: bool = False,
            status: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body to send for *request* from this entry; *status* the
        ``Cache-Status`` parameters if it is not a plain hit."""
        age = self.age(now)
        ttl = self.ttl - int(self.resident(now))
        status_field = "ratelimit-mw; " + (status or "hit") + f"; ttl={ttl}" + (
            "; collapsed" if collapsed else "")
        if self.not_modified(request):
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
