"""A read-only view of one request, built from an ASGI scope or a WSGI environ. No I/O."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

__all__ = ["RequestInfo", "normalize_path", "request_paths"]


def request_paths(path: str) -> tuple[str, str | None]:
    """The normalised path of *path* (as a server decoded it), and the path the router
    sees when that differs (``None`` when it does not).

    `normalize_path` decodes what percent-escapes the server left (a second layer), so
    ``/items/..%2Fhealth`` becomes ``/health``, while the router matches
    ``/items/..%2Fhealth`` against ``/items/{id}``. Rules try the router's view first
    (`RuleTable.match`), so a second layer of escapes cannot move a request out of the
    rule of the route that serves it.
    """
    normal = normalize_path(path)
    return normal, _routed(path, normal) if "%" in path else None


def _routed(path: str, normal: str) -> str | None:
    """`request_paths`' second answer for a *path* with percent-escapes."""
    routed = normalize_path(path, decode=False)
    return None if routed == normal else routed


def normalize_path(path: str, *, decode: bool = True) -> str:
    """Return the path an application routes, so that variants cannot escape a rule.

    Percent-escapes are decoded, empty and ``.`` segments dropped, ``..`` resolved (never
    above the root) and a trailing slash removed: ``//login``, ``/./login``, ``/login/``,
    ``/a/../login`` and ``/log%69n`` all become ``/login``.

    >>> normalize_path("//api/./v1/../v2/items/")
    '/api/v2/items'
    """
    if decode and "%" in path:
        # ASGI servers already decode ``path``; decoding what is left errs on the side
        # of matching a rule (over-limiting), never of escaping one.
        path = unquote(path, errors="surrogateescape")
    if "//" in path or "/." in path or "\\" in path or not path.startswith("/"):
        segments: list[str] = []
        for segment in path.replace("\\", "/").split("/"):
            if segment in ("", "."):
                continue
            if segment == "..":
                if segments:
                    segments.pop()
                continue
            segments.append(segment)
        return "/" + "/".join(segments)
    if len(path) > 1 and path.endswith("/"):
        return path.rstrip("/") or "/"
    return path


class RequestInfo:
    """What the limiter may know of a request: method, path, headers, peer.

    Built once per request by `from_scope` (ASGI) or `from_environ` (WSGI).
    Header names are lower case; repeated headers are joined with ``", "`` as RFC 9110
    allows for list-valued fields. Headers are decoded lazily, on first use.

    Example::

        info = RequestInfo("GET", "/items/1", client="203.0.113.7",
                           headers={"x-api-key": "secret"})
        assert info.header("X-API-Key") == "secret"

    Security: every header here comes from the client; only ``client`` (the socket peer)
    is not. Trust a header only through configuration (see `ratelimit_mw.keys.client_ip`).
    """

    __slots__ = ("_headers", "_host", "_query", "_raw_headers", "_raw_path", "client",
                 "method", "path", "routed_path", "scheme")

    def __init__(
        self,
        method: str,
        path: str,
        *,
        raw_path: str | None = None,
        headers: Mapping[str, str] | None = None,
        client: str | None = None,
        scheme: str = "http",
        host: str | None = None,
        query: str = "",
    ) -> None:
        self.method = method.upper()
        #: The normalised path rules are matched against; `routed_path`, when not
        #: ``None``, the path without the second layer of percent-decoding (tried first).
        # request_paths(), inline: this runs for every request.
        self.path = normal = normalize_path(path)
        self.routed_path = _routed(path, normal) if "%" in path else None
        #: The path as received, before normalisation.
        self._raw_path: str | bytes = path if raw_path is None else raw_path
        self.client = client
        self.scheme = scheme
        self._query: str | bytes = query
        self._raw_headers: Any = None
        self._headers: dict[str, str] | None = (
            None if headers is None else {k.lower(): v for k, v in headers.items()}
        )
        self._host = host

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> RequestInfo:
        """Build from an ASGI ``http`` or ``websocket`` scope."""
        self = cls.__new__(cls)
        # Upper-cased as Django's ASGIRequest does: a 'post' request reaches the POST
        # view there, so it must not escape a methods=["POST"] rule here.
        self.method = scope.get("method", "GET").upper()
        path: str = scope.get("path") or "/"
        root: str = scope.get("root_path") or ""
        if root and path.startswith(root) and path[len(root):len(root) + 1] in ("", "/"):
            # ASGI puts root_path in front of path (uvicorn >= 0.26, httpx); the app routes
            # what follows it, as Starlette's get_route_path does. A rule for /login must
            # hold behind --root-path /api too.
            path = path[len(root):] or "/"
        # request_paths(), inline: this runs for every request.
        self.path = normal = normalize_path(path)
        self.routed_path = _routed(path, normal) if "%" in path else None
        # Decoded only if asked for: most requests never need them.
        self._raw_path = scope.get("raw_path") or path
        client = scope.get("client")
        self.client = client[0] if client else None
        self.scheme = scope.get("scheme", "http")
        self._query = scope.get("query_string", b"")
        self._raw_headers = scope.get("headers", ())
        self._headers = None
        self._host = None
        return self

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> RequestInfo:
        """Build from a PEP 3333 WSGI environ."""
        self = cls.__new__(cls)
        # werkzeug and Django route REQUEST_METHOD.upper(): a lower-case 'post' reaches
        # the POST view, so it must count against a methods=["POST"] rule too.
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        # PEP 3333 carries the path as latin-1 decoded bytes; the app sees UTF-8.
        path: str = environ.get("PATH_INFO") or "/"
        if not path.isascii():  # ASCII reads the same either way: skip the round trip
            # A server that already decoded to str (not PEP 3333, but seen) is kept as is.
            with contextlib.suppress(UnicodeEncodeError):
                path = path.encode("latin-1").decode("utf-8", "surrogateescape")
        # request_paths(), inline: this runs for every request.
        self.path = normal = normalize_path(path)
        self.routed_path = _routed(path, normal) if "%" in path else None
        self._raw_path = environ.get("RAW_URI") or environ.get("REQUEST_URI") or path
        self.client = environ.get("REMOTE_ADDR") or None
        self.scheme = environ.get("wsgi.url_scheme", "http")
        self._query = environ.get("QUERY_STRING", "")
        self._raw_headers = environ
        self._headers = None
        self._host = None
        return self

    @property
    def raw_path(self) -> str:
        """The path as received, before normalisation (latin-1 decoded bytes for ASGI)."""
        raw = self._raw_path
        return raw.decode("latin-1") if isinstance(raw, bytes) else raw

    @property
    def query(self) -> str:
        """The query string as received, undecoded (``""`` when there is none)."""
        query = self._query
        return query.decode("latin-1") if isinstance(query, bytes) else query

    @property
    def headers(self) -> Mapping[str, str]:
        """All request headers, lower-case names, repeated values joined with ``", "``."""
        if self._headers is None:
            self._headers = self._decode_headers()
        return self._headers

    @property
    def host(self) -> str | None:
        """The ``Host`` the client sent (unvalidated), or the one given at construction."""
        return self._host if self._host is not None else self.headers.get("host")

    def header(self, name: str) -> str | None:
        """The value of header *name* (case-insensitive), or ``None``."""
        return self.headers.get(name.lower())

    def _decode_headers(self) -> dict[str, str]:
        raw = self._raw_headers
        out: dict[str, str] = {}
        if isinstance(raw, Mapping):  # a WSGI environ
            for key, value in raw.items():
                if key.startswith("HTTP_"):
                    out[key[5:].replace("_", "-").lower()] = value
                elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                    out[key.replace("_", "-").lower()] = value
            return out
        # A client may repeat a header line tens of thousands of times: the values after
        # the first are collected as bytes and joined and decoded once per name, so that
        # decoding is linear in the number of lines. Most names come once and never reach
        # `repeated`.
        repeated: dict[str, list[bytes]] = {}
        for name_b, value_b in raw or ():
            name = name_b.decode("latin-1").lower()
            if name not in out:
                out[name] = value_b.decode("latin-1")
            elif name in repeated:
                repeated[name].append(value_b)
            else:
                repeated[name] = [value_b]
        for name, values in repeated.items():
            out[name] = f"{out[name]}, {b', '.join(values).decode('latin-1')}"
        return out

    def __repr__(self) -> str:
        return f"RequestInfo({self.method} {self.path!r} from {self.client!r})"
