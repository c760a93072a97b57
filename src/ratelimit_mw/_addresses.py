"""Client addresses as proxies write them: one address, and the entries of a forwarding
header. No trust decisions here: those are `keys.client_ip`'s."""

from __future__ import annotations

import ipaddress
import re
from typing import TypeAlias

__all__ = ["IPAddress", "forwarded_for", "parse_ip", "rightmost"]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(value: str) -> IPAddress | None:
    """Parse one address as proxies write it; ``None`` for anything malformed.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]``, ``[::1]:80`` and the quoted
    RFC 7239 forms; IPv4-mapped IPv6 becomes IPv4. Rejects ``unknown``, obfuscated
    identifiers (``_hidden``), host names, and anything else.
    """
    value = value.strip().strip('"')
    if not value or len(value) > 64:
        return None
    # Only '[v6]', '[v6]:port', 'v4:port' (port: digits or an RFC 7239 obfport) are
    # taken apart: what follows ']' or ':' must be such a port and brackets must hold
    # IPv6, so that values such as '[::1]junk', '1.2.3.4:' or '[1.2.3.4]' count as
    # malformed, never as addresses.
    bracketed = value.startswith("[")
    if bracketed:
        end = value.find("]")
        if end < 0 or not _valid_port(value[end + 1:], optional=True):
            return None
        value = value[1:end]
    elif value.count(":") == 1:  # IPv4 with a port
        value, _, port = value.partition(":")
        if not _valid_port(port, optional=False):
            return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if bracketed and not isinstance(address, ipaddress.IPv6Address):
        return None  # brackets are IPv6 syntax only (RFC 3986, RFC 7239)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id:  # "fe80::1%eth0": the zone is the proxy's business, not ours
            return ipaddress.IPv6Address(value.split("%", 1)[0])
    return address


_PORT = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")


def _valid_port(text: str, *, optional: bool) -> bool:
    """``text`` is ``":" port`` after a bracket (or ``""`` if *optional*), or a bare port."""
    if optional:
        if not text:
            return True
        if not text.startswith(":"):
            return False
        text = text[1:]
    return _PORT.fullmatch(text) is not None


def rightmost(value: str, count: int) -> list[str]:
    """The last *count* comma-separated entries of *value* (all, if fewer), in order.

    Only the commas of those entries are looked for, and only they are copied (rsplit
    would copy the rest of the header too): the cost depends on the entries read, not on
    how long a client made the part of the header left of them.
    """
    start = len(value)
    for _ in range(count):
        start = value.rfind(",", 0, start)
        if start < 0:
            return value.split(",")
    return value[start + 1:].split(",")


def forwarded_for(elements: list[str]) -> list[str]:
    """The ``for=`` values of RFC 7239 ``Forwarded`` *elements*, in order; malformed → ``""``."""
    out: list[str] = []
    for element in elements:
        found = ""
        for pair in element.split(";"):
            name, sep, val = pair.partition("=")
            if sep and name.strip().lower() == "for":
                found = val.strip()
        out.append(found)
    return out
