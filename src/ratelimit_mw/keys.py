"""Key functions: who a request counts against. Plain callables ``(RequestInfo) -> str | None``.

``None`` means "no identity here": the next key function in the chain is asked, and the
client IP of the socket peer ends every chain.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable
from typing import TypeAlias
from urllib.parse import parse_qsl

from ._addresses import IPAddress as _IPAddress
from ._addresses import forwarded_for as _forwarded_for
from ._addresses import parse_ip
from ._addresses import rightmost as _rightmost
from ._request import RequestInfo
from .errors import ConfigurationError

__all__ = ["KeyFunc", "api_key", "chain", "client_in", "client_ip", "header", "shared"]

KeyFunc: TypeAlias = Callable[[RequestInfo], "str | None"]

_IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# Forwarding headers we know how to read: a list of addresses, nearest hop last.
_FORWARD_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "true-client-ip",
                    "cf-connecting-ip", "fly-client-ip", "x-client-ip")

#: How many entries of the forwarding header the ``trusted_proxies`` walk examines, from
#: the right. Real chains of proxies are a handful long; a client inside a trusted network
#: (or behind a proxy that passes the header on without appending) can send a header of
#: any length, and each entry costs an address parse. Past the bound the last trusted
#: address examined is the client: the walk never believes an entry it did not check.
_MAX_HOPS = 32


class _ClientIP:
    __slots__ = ("_header", "_hops", "_networks", "_prefix")

    def __init__(
        self,
        header: str,
        networks: tuple[_IPNetwork, ...],
        hops: int,
        prefix: int,
    ) -> None:
        self._header = header
        self._networks = networks
        self._hops = hops
        self._prefix = prefix

    def __call__(self, request: RequestInfo) -> str | None:
        client = request.client
        if client and not (self._networks or self._hops) and client.count(".") == 3 and (
            ":" not in client
        ):
            return "ip:" + client  # the common case: an IPv4 peer, no proxy configuration
        return self._format(self.address(request), client)

    def address(self, request: RequestInfo) -> _IPAddress | None:
        """The client address by the configured trust; ``None`` if the peer is unknown."""
        peer = parse_ip(request.client) if request.client else None
        if peer is None or not (self._networks or self._hops):
            return peer
        if self._networks and not self._trusted(peer):
            return peer  # the peer is not our proxy: whatever it sent is a claim, not a fact
        raw = request.header(self._header)
        if not raw:
            return peer
        # Only the entries the walk may use are split off: the rest of the header is the
        # client's to make as long as it likes.
        hops = _rightmost(raw, self._hops or _MAX_HOPS)
        if self._header == "forwarded":
            hops = _forwarded_for(hops)
        if self._hops:
            # Each of our N proxies appended one entry; the N-th from the right is the
            # address the outermost proxy saw. Fewer entries: a proxy was bypassed.
            if len(hops) < self._hops:
                return peer
            return parse_ip(hops[0]) or peer
        # Walk from the right; the first address that is not one of our proxies is the
        # client. A malformed entry was written by a proxy we trust to be well formed, so
        # stop there and count against the last good hop instead of trusting the string.
        # After _MAX_HOPS trusted entries the last of them is the client, as when every
        # entry is trusted.
        last = peer
        for hop in reversed(hops):
            address = parse_ip(hop)
            if address is None:
                return last
            if not self._trusted(address):
                return address
            last = address
        return last

    def _trusted(self, address: _IPAddress) -> bool:
        return any(address in network for network in self._networks)

    def _format(self, address: _IPAddress | None, fallback: str | None) -> str:
        if address is None:
            # Not an IP (a unix socket, a test client): still one identity per peer.
            return f"peer:{fallback}" if fallback else "peer:unknown"
        if isinstance(address, ipaddress.IPv6Address) and self._prefix < 128:
            # One IPv6 subscriber owns a whole /64: count the network, not the address.
            net = ipaddress.IPv6Network((address, self._prefix), strict=False)
            return f"ip:{net.network_address}/{self._prefix}"
        return f"ip:{address}"


def client_ip(
    trusted_proxies: Iterable[str] | None = None,
    *,
    trusted_hops: int | None = None,
    header: str = "X-Forwarded-For",
    ipv6_prefix: int = 64,
) -> KeyFunc:
    """Key by client IP address, trusting forwarding headers only from your proxies.

    By default the socket peer is the client and every forwarding header is ignored.
    Behind proxies, say which to trust, one way or the other:

    - ``trusted_proxies``: CIDRs of your proxies. If the peer is one of them, *header* is
      walked from the right and the first address outside them is the client. The walk
      examines at most 32 entries; if all of them are trusted, the 32nd from the right
      is the client.
    - ``trusted_hops``: the number of proxies in front of the app; the client is the
      N-th address from the right of *header*.

    *header* is ``X-Forwarded-For`` (default), ``Forwarded`` (RFC 7239, its ``for=``
    values) or a single-address header your proxy sets, such as ``X-Real-IP``.
    IPv6 clients are counted per ``/ipv6_prefix`` network (64 by default), as one
    subscriber is given a whole /64; pass 128 to count single addresses.

    Example::

        key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])       # behind a load balancer
        key = keys.client_ip(trusted_hops=1, header="Forwarded")   # one proxy, RFC 7239

    Security: a client can write any forwarding header it likes; only entries appended by
    proxies you trust are believed, and malformed ones never are.
    """
    if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int) or not (
        1 <= ipv6_prefix <= 128
    ):
        raise ConfigurationError(f"client_ip(ipv6_prefix={ipv6_prefix!r}): must be 1..128")
    return _resolver("client_ip", trusted_proxies, trusted_hops, header, ipv6_prefix)


def _resolver(where: str, trusted_proxies: Iterable[str] | None, trusted_hops: int | None,
              header: str, ipv6_prefix: int = 128) -> _ClientIP:
    """The `_ClientIP` for a proxy configuration, checked; errors name *where*."""
    if trusted_proxies is not None and trusted_hops is not None:
        raise ConfigurationError(
            f"{where}(): give trusted_proxies or trusted_hops, not both"
        )
    networks = _networks(trusted_proxies, where, "trusted_proxies")
    if trusted_hops is not None and (
        isinstance(trusted_hops, bool) or not isinstance(trusted_hops, int) or trusted_hops < 1
    ):
        raise ConfigurationError(
            f"{where}(trusted_hops={trusted_hops!r}): must be a whole number >= 1"
        )
    name = header.strip().lower()
    if name not in _FORWARD_HEADERS:
        raise ConfigurationError(
            f"{where}(header={header!r}): use one of "
            + ", ".join(h.title() for h in _FORWARD_HEADERS)
        )
    return _ClientIP(name, networks, trusted_hops or 0, ipv6_prefix)


def _networks(cidrs: Iterable[str] | None, where: str,
              option: str) -> tuple[_IPNetwork, ...]:
    if isinstance(cidrs, str):
        raise ConfigurationError(f"{where}({option}={cidrs!r}): pass a list of CIDRs, "
                                 f"e.g. [{cidrs!r}]")
    networks: list[_IPNetwork] = []
    for cidr in cidrs or ():
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{where}({option}=...): {cidr!r} is not an IP network; write it as "
                "'10.0.0.0/8' or '192.0.2.1'"
            ) from None
    return tuple(networks)


class _ClientIn:
    __slots__ = ("_networks", "_resolver")

    def __init__(self, networks: tuple[_IPNetwork, ...], resolver: _ClientIP) -> None:
        self._networks = networks
        self._resolver = resolver

    def __call__(self, request: RequestInfo) -> bool:
        address = self._resolver.address(request)
        return address is not None and any(address in net for net in self._networks)


def client_in(
    networks: Iterable[str],
    *,
    trusted_proxies: Iterable[str] | None = None,
    trusted_hops: int | None = None,
    header: str = "X-Forwarded-For",
) -> Callable[[RequestInfo], bool]:
    """A predicate: is the client in one of *networks* (CIDRs)? For ``exempt_when=``.

    The client address is resolved exactly as `client_ip` resolves it, with the same
    proxy trust (*trusted_proxies* / *trusted_hops* / *header*): by default the socket
    peer, and forwarding headers only from your proxies. Give it the trust you gave
    ``client_ip``, or an allow-list can be reached by writing ``X-Forwarded-For``.

    Example::

        RateLimitMiddleware(app, default_limits="100/minute",
                            exempt_when=keys.client_in(["10.0.0.0/8"],
                                                       trusted_proxies=["192.0.2.0/24"]))

    Security: a peer outside *trusted_proxies* is the client, whatever header it sends,
    so a forged ``X-Forwarded-For: 10.0.0.1`` exempts no one.
    """
    allowed = _networks(networks, "client_in", "networks")
    if not allowed:
        raise ConfigurationError("client_in(): give at least one network")
    return _ClientIn(allowed, _resolver("client_in", trusted_proxies, trusted_hops, header))


def _digest(secret: str) -> str:
    # 128 bits of BLAKE2b: raw secrets never reach the storage, and collisions stay
    # out of reach. Keyed hashing is not needed: the digest is never shown to clients.
    return hashlib.blake2b(secret.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


class _APIKey:
    __slots__ = ("_fallback", "_header", "_query")

    def __init__(self, header: str | None, query: str | None, fallback: KeyFunc | None) -> None:
        self._header = header
        self._query = query
        self._fallback = fallback

    def __call__(self, request: RequestInfo) -> str | None:
        secret = request.header(self._header) if self._header else None
        secret = secret.strip() if secret else None  # blank is no key, not a shared counter
        if not secret and self._query and request.query:
            for name, value in parse_qsl(request.query, keep_blank_values=False):
                if name == self._query:
                    secret = value.strip()
                    break
        if secret:
            return "key:" + _digest(secret)
        return self._fallback(request) if self._fallback else None


def api_key(
    header: str | None = "X-API-Key",
    *,
    query: str | None = None,
    fallback: KeyFunc | None = None,
) -> KeyFunc:
    """Key by API key, read from *header* (then the *query* parameter, if given).

    The secret is hashed (BLAKE2b-128) before it becomes part of a storage key, so raw
    keys never reach Redis, logs or ``inspect`` output. A request without a key gets
    *fallback*'s identity, or by default ``None``: the middleware then asks its next key
    function — its own ``key=`` (where your proxy trust is configured), else the socket
    peer's IP. So keyless clients are counted by IP, the right IP behind a proxy.

    Example::

        Rule("/api/{path:path}", "1000/hour", key=keys.api_key("X-API-Key"))

    Security: the key is not validated here — an unknown key is counted like any other.
    Authenticate in the app; rate limiting unauthenticated keys still bounds the damage.
    """
    if not header and not query:
        raise ConfigurationError("api_key(): give a header name, a query parameter, or both")
    if fallback is not None and not callable(fallback):
        raise ConfigurationError(f"api_key(fallback={fallback!r}): must be a key function")
    return _APIKey(header.lower() if header else None, query, fallback)


def header(name: str, *, hashed: bool = True) -> KeyFunc:
    """Key by the value of request header *name* (hashed unless ``hashed=False``).

    Only for headers your own front end sets (a user id from an auth gateway, say):
    clients can send any header.

    Example::

        key = keys.header("X-User-Id", hashed=False)
    """
    lowered = name.lower()

    def key(request: RequestInfo) -> str | None:
        value = request.header(lowered)
        if not value:
            return None
        return f"hdr:{lowered}:" + (_digest(value) if hashed else value)

    return key


def shared(name: str = "all") -> KeyFunc:
    """One counter for every client: a global limit on a route.

    Example::

        Rule("/export", "10/minute", key=keys.shared())
    """
    identity = f"shared:{name}"
    return lambda _request: identity


def chain(*functions: KeyFunc) -> KeyFunc:
    """The first non-``None`` identity of *functions*, else ``None``.

    Example::

        key = keys.chain(keys.header("X-User-Id"), keys.client_ip())
    """
    if not functions:
        raise ConfigurationError("chain(): give at least one key function")
    for function in functions:
        if not callable(function):
            raise ConfigurationError(f"chain(): {function!r} is not callable")

    def key(request: RequestInfo) -> str | None:
        for function in functions:
            identity = function(request)
            if identity is not None:
                return identity
        return None

    return key
