"""Key functions: who a request counts against. Plain RequestInfo objects, no I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratelimit_mw import keys
from ratelimit_mw._request import RequestInfo
from ratelimit_mw.errors import ConfigurationError
from ratelimit_mw.keys import parse_ip

PEER = "203.0.113.7"
PROXY = "10.0.0.1"


def req(client: str | None = PEER, headers: Mapping[str, str] | None = None,
        query: str = "") -> RequestInfo:
    return RequestInfo("GET", "/", client=client, headers=headers, query=query)


def ipkey(text: str) -> str:
    return f"ip:{text}"


SPOOFING_HEADERS = [
    {"X-Forwarded-For": "1.2.3.4"},
    {"X-Forwarded-For": "1.2.3.4, 5.6.7.8"},
    {"Forwarded": "for=1.2.3.4"},
    {"Forwarded": 'for="[2001:db8::1]:80"'},
    {"X-Real-IP": "1.2.3.4"},
    {"True-Client-IP": "1.2.3.4"},
    {"CF-Connecting-IP": "1.2.3.4"},
    {"Fly-Client-IP": "1.2.3.4"},
    {"X-Client-IP": "1.2.3.4"},
    {"X-Forwarded-For": "1.2.3.4", "Forwarded": "for=5.6.7.8", "X-Real-IP": "9.9.9.9"},
]


# --- client_ip(): no configuration ----------------------------------------------------


def test_default_uses_the_socket_peer() -> None:
    assert keys.client_ip()(req()) == ipkey(PEER)


@pytest.mark.parametrize("headers", SPOOFING_HEADERS)
@pytest.mark.parametrize("peer", [PEER, PROXY, "127.0.0.1", "2001:db8::1"])
def test_default_ignores_every_forwarding_header(headers: dict[str, str], peer: str) -> None:
    key = keys.client_ip()
    assert key(req(peer, headers)) == key(req(peer))


@given(st.dictionaries(
    st.sampled_from(["x-forwarded-for", "forwarded", "x-real-ip", "true-client-ip",
                     "cf-connecting-ip", "x-client-ip", "fly-client-ip"]),
    st.text(max_size=100),
))
def test_default_identity_never_depends_on_client_headers(headers: dict[str, str]) -> None:
    key = keys.client_ip()
    assert key(req(PEER, headers)) == ipkey(PEER)
    assert key(req("2001:db8::5", headers)) == "ip:2001:db8::/64"


def test_peer_that_is_not_an_ip_is_still_one_identity_per_peer() -> None:
    key = keys.client_ip()
    a = key(req("testclient"))
    b = key(req("/run/app.sock"))
    assert a is not None
    assert b is not None
    assert a != b
    assert a != key(req(PEER))
    assert key(req(None)) == "peer:unknown"


def test_ipv4_mapped_peer_is_the_ipv4_address() -> None:
    key = keys.client_ip()
    assert key(req("::ffff:203.0.113.7")) == key(req(PEER)) == ipkey(PEER)


# --- IPv6 grouping ---------------------------------------------------------------------


def test_ipv6_grouped_by_64_by_default() -> None:
    key = keys.client_ip()
    a = key(req("2001:db8:1:2::1"))
    b = key(req("2001:db8:1:2:ffff:ffff:ffff:ffff"))
    c = key(req("2001:db8:1:3::1"))
    assert a == b == "ip:2001:db8:1:2::/64"
    assert c == "ip:2001:db8:1:3::/64"
    assert a != c


def test_ipv6_per_address_with_prefix_128() -> None:
    key = keys.client_ip(ipv6_prefix=128)
    assert key(req("2001:db8::1")) == "ip:2001:db8::1"
    assert key(req("2001:db8::2")) == "ip:2001:db8::2"


def test_ipv6_prefix_48() -> None:
    key = keys.client_ip(ipv6_prefix=48)
    assert key(req("2001:db8:1:2::1")) == key(req("2001:db8:1:ffff::1")) == "ip:2001:db8:1::/48"


def test_ipv6_prefix_does_not_affect_ipv4() -> None:
    assert keys.client_ip(ipv6_prefix=8)(req(PEER)) == ipkey(PEER)


def test_ipv6_scope_id_is_dropped() -> None:
    key = keys.client_ip(ipv6_prefix=128)
    assert key(req("fe80::1%eth0")) == key(req("fe80::1")) == "ip:fe80::1"


# --- client_ip(trusted_proxies=...) --------------------------------------------------


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4, 10.0.0.5", "1.2.3.4"),
        ("1.2.3.4,10.0.0.5,10.1.1.1", "1.2.3.4"),
        # A client-written prefix left of the real client is ignored.
        ("6.6.6.6, 1.2.3.4", "1.2.3.4"),
        ("6.6.6.6, 7.7.7.7, 1.2.3.4, 10.0.0.5", "1.2.3.4"),
        ("10.9.9.9, 1.2.3.4, 10.0.0.5", "1.2.3.4"),
        # A proxy written as IPv4-mapped IPv6 is still a trusted proxy.
        ("1.2.3.4, ::ffff:10.0.0.5", "1.2.3.4"),
        # Every hop trusted: the leftmost is the best we know.
        ("10.0.0.9, 10.0.0.5", "10.0.0.9"),
        # Ports and IPv4-mapped forms of one address are one identity.
        ("1.2.3.4:5678", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("[::ffff:1.2.3.4]:80", "1.2.3.4"),
        ("  1.2.3.4  ,  10.0.0.5 ", "1.2.3.4"),
        # IPv6 client behind the proxy, grouped by /64.
        ("2001:db8::17", "2001:db8::/64"),
        ("[2001:db8::17]:4711", "2001:db8::/64"),
    ],
)
def test_trusted_proxies_walk_xff_from_the_right(xff: str, expected: str) -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    assert key(req(PROXY, {"X-Forwarded-For": xff})) == ipkey(expected)


@pytest.mark.parametrize(
    "xff",
    [
        "garbage",
        "1.2.3.4, garbage",
        "1.2.3.4, , ",
        "1.2.3.4,",
        ",",
        "",
        "unknown",
        "_hidden",
        "example.com",
        "1.2.3.4 5.6.7.8",
        "999.1.1.1",
        "1.2.3",
        "1" * 100_000,
        "1.2.3.4;" * 10_000,
        "\x00\x01",
        "[::1",
        "%",
        "1.2.3.4/8",
    ],
)
def test_malformed_rightmost_entry_falls_back_to_the_proxy(xff: str) -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    assert key(req(PROXY, {"X-Forwarded-For": xff})) == ipkey(PROXY)


def test_malformed_entry_stops_the_walk_at_the_last_good_hop() -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    # The client part left of 'garbage' is never believed.
    got = key(req(PROXY, {"X-Forwarded-For": "1.2.3.4, garbage, 10.0.0.5"}))
    assert got == ipkey("10.0.0.5")
    got = key(req(PROXY, {"X-Forwarded-For": "1.2.3.4, , 10.0.0.5"}))
    assert got == ipkey("10.0.0.5")


@pytest.mark.parametrize("headers", SPOOFING_HEADERS)
def test_untrusted_peer_is_used_as_is_even_with_xff(headers: dict[str, str]) -> None:
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        key = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header=header)
        assert key(req(PEER, headers)) == ipkey(PEER)


def test_trusted_peer_without_header_is_the_client() -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    assert key(req(PROXY)) == ipkey(PROXY)


def test_trusted_proxies_single_addresses_and_ipv6() -> None:
    key = keys.client_ip(trusted_proxies=["192.0.2.1", "2001:db8:ffff::/48"])
    assert key(req("192.0.2.1", {"X-Forwarded-For": "1.2.3.4"})) == ipkey("1.2.3.4")
    assert key(req("192.0.2.2", {"X-Forwarded-For": "1.2.3.4"})) == ipkey("192.0.2.2")
    assert key(req("2001:db8:ffff::9", {"X-Forwarded-For": "1.2.3.4"})) == ipkey("1.2.3.4")


def test_trusted_proxies_accepts_any_iterable_and_non_strict_cidr() -> None:
    key = keys.client_ip(trusted_proxies=("10.0.0.1/8",))
    assert key(req("10.200.0.1", {"X-Forwarded-For": "1.2.3.4"})) == ipkey("1.2.3.4")


def test_ipv4_mapped_proxy_peer_is_trusted() -> None:
    # Dual-stack servers report IPv4 peers as ::ffff:a.b.c.d.
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])
    assert key(req("::ffff:10.0.0.1", {"X-Forwarded-For": "1.2.3.4"})) == ipkey("1.2.3.4")


def test_trusted_proxies_with_x_real_ip() -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header="X-Real-IP")
    assert key(req(PROXY, {"X-Real-IP": "1.2.3.4"})) == ipkey("1.2.3.4")
    # The configured header only: X-Forwarded-For is not consulted.
    assert key(req(PROXY, {"X-Forwarded-For": "1.2.3.4"})) == ipkey(PROXY)
    assert key(req(PEER, {"X-Real-IP": "1.2.3.4"})) == ipkey(PEER)


def test_trusted_proxies_reads_only_the_configured_header() -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"])  # X-Forwarded-For
    assert key(req(PROXY, {"Forwarded": "for=1.2.3.4"})) == ipkey(PROXY)
    assert key(req(PROXY, {"X-Real-IP": "1.2.3.4"})) == ipkey(PROXY)


# --- client_ip(trusted_hops=N) --------------------------------------------------------


@pytest.mark.parametrize(
    ("hops", "xff", "expected"),
    [
        (1, "1.2.3.4", "1.2.3.4"),
        (1, "6.6.6.6, 1.2.3.4", "1.2.3.4"),
        (2, "6.6.6.6, 1.2.3.4, 10.0.0.5", "1.2.3.4"),
        (2, "1.2.3.4, 10.0.0.5", "1.2.3.4"),
        (3, "9.9.9.9, 1.2.3.4, 10.0.0.5, 10.0.0.6", "1.2.3.4"),
        # Fewer entries than hops: a proxy was bypassed, the peer is the client.
        (2, "1.2.3.4", PEER),
        (3, "1.2.3.4, 5.6.7.8", PEER),
        # Malformed N-th entry: the peer, never the string.
        (1, "1.2.3.4, garbage", PEER),
        (2, "1.2.3.4, , 10.0.0.5", PEER),
        (1, "1.2.3.4, unknown", PEER),
        (1, "1.2.3.4:80", "1.2.3.4"),
    ],
)
def test_trusted_hops_picks_the_nth_from_the_right(hops: int, xff: str, expected: str) -> None:
    key = keys.client_ip(trusted_hops=hops)
    assert key(req(PEER, {"X-Forwarded-For": xff})) == ipkey(expected)


def test_trusted_hops_without_header_is_the_peer() -> None:
    assert keys.client_ip(trusted_hops=1)(req(PEER)) == ipkey(PEER)


# --- RFC 7239 Forwarded ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
        ("For=192.0.2.60", "192.0.2.60"),
        ("FOR = 192.0.2.60", "192.0.2.60"),
        ("proto=https;for=192.0.2.60", "192.0.2.60"),
        ('for="192.0.2.60:8080"', "192.0.2.60"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::/64"),
        ('for="[2001:db8:cafe::17]"', "2001:db8:cafe::/64"),
        ("for=198.51.100.17, for=192.0.2.60", "192.0.2.60"),
        ('for=198.51.100.17;by=10.0.0.1, for="[2001:db8:cafe::17]:4711";proto=https',
         "2001:db8:cafe::/64"),
        # Unknown or obfuscated: not an address, the proxy that wrote it is the client.
        ("for=unknown", PROXY),
        ("for=_hidden", PROXY),
        ('for="_gazonk"', PROXY),
        ("for=192.0.2.60, for=unknown", PROXY),
        ("by=10.0.0.2", PROXY),
        ("for=", PROXY),
        (";;;,,,", PROXY),
        ("garbage", PROXY),
    ],
)
def test_forwarded_with_trusted_proxies(forwarded: str, expected: str) -> None:
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header="Forwarded")
    assert key(req(PROXY, {"Forwarded": forwarded})) == ipkey(expected)


def test_forwarded_quoted_ipv6_with_port_per_address() -> None:
    key = keys.client_ip(trusted_hops=1, header="Forwarded", ipv6_prefix=128)
    got = key(req(PEER, {"Forwarded": 'for="[2001:db8:cafe::17]:4711"'}))
    assert got == "ip:2001:db8:cafe::17"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ("for=6.6.6.6, for=192.0.2.43", "192.0.2.43"),
        ("for=192.0.2.43", "192.0.2.43"),
        ("for=6.6.6.6, for=unknown", PEER),
        ("for=6.6.6.6, for=_hidden", PEER),
        ("for=6.6.6.6, by=10.0.0.1", PEER),
    ],
)
def test_forwarded_with_trusted_hops(forwarded: str, expected: str) -> None:
    key = keys.client_ip(trusted_hops=1, header="forwarded")
    assert key(req(PEER, {"Forwarded": forwarded})) == ipkey(expected)


def test_forwarded_ignored_by_default_and_from_untrusted_peers() -> None:
    headers = {"Forwarded": "for=1.2.3.4"}
    assert keys.client_ip()(req(PEER, headers)) == ipkey(PEER)
    key = keys.client_ip(trusted_proxies=["10.0.0.0/8"], header="Forwarded")
    assert key(req(PEER, headers)) == ipkey(PEER)


# --- malformed values never become the identity and never raise ----------------------


def _is_address_identity(identity: str) -> bool:
    assert identity.startswith("ip:")
    text = identity[3:]
    try:
        if "/" in text:
            ipaddress.ip_network(text)
        else:
            ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_junk = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(["1.2.3.4", "::1", "[", "]", ":", "80", '"', ",", ";", "=",
                              "for", "unknown", "_x", " ", "%", "ffff", "10.0.0.5",
                              "2001:db8::1", "\x00", "é"]), max_size=20).map("".join),
)


@given(_junk, st.sampled_from(["X-Forwarded-For", "Forwarded", "X-Real-IP"]))
def test_junk_from_a_trusted_proxy_never_raises_nor_leaks(value: str, header: str) -> None:
    for key in (keys.client_ip(trusted_proxies=["10.0.0.0/8"], header=header),
                keys.client_ip(trusted_hops=1, header=header),
                keys.client_ip(trusted_hops=3, header=header)):
        identity = key(req(PROXY, {header: value}))
        assert identity is not None
        assert _is_address_identity(identity)


@pytest.mark.parametrize(
    "value",
    [
        "1.2.3.4:",
        "1.2.3.4:http",
        "1.2.3.4:80:90",
        "[1.2.3.4]",
        "[::1]junk",
        "[::1]:port",
        "[::1]:",
        "::1%",
        "1.2.3.4:_",
        "[::1]:_",
        "x" * 1000,
        "unknown",
        "_hidden",
        "",
        "   ",
        "[]",
        "01.2.3.4",
    ],
)
def test_parse_ip_rejects_malformed(value: str) -> None:
    assert parse_ip(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:80", "1.2.3.4"),
        ('"1.2.3.4:80"', "1.2.3.4"),
        # RFC 7239 obfuscated ports (obfport = "_" 1*(ALPHA / DIGIT / "." / "_" / "-")).
        ('"192.0.2.43:_a-b.c"', "192.0.2.43"),
        ('"[2001:db8::17]:_x1"', "2001:db8::17"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[::1]:443", "::1"),
        ('"[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("[::ffff:192.0.2.1]:80", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_parse_ip_accepts_proxy_forms(value: str, expected: str) -> None:
    assert parse_ip(value) == ipaddress.ip_address(expected)


# --- configuration errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trusted_proxies": ["10.0.0.0/8"], "trusted_hops": 1}, "not both"),
        ({"trusted_proxies": "10.0.0.0/8"}, "list of CIDRs"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "not an IP network"),
        ({"trusted_proxies": ["not-a-cidr"]}, "not an IP network"),
        ({"trusted_proxies": ["10.0.0.0/8", "10.0.0.256"]}, "10.0.0.256"),
        ({"trusted_hops": 0}, "trusted_hops"),
        ({"trusted_hops": -1}, "trusted_hops"),
        ({"trusted_hops": True}, "trusted_hops"),
        ({"trusted_hops": "1"}, "trusted_hops"),
        ({"trusted_hops": 1.0}, "trusted_hops"),
        ({"header": "X-Evil"}, "X-Forwarded-For"),
        ({"header": "Host"}, "header"),
        ({"ipv6_prefix": 0}, "ipv6_prefix"),
        ({"ipv6_prefix": 129}, "ipv6_prefix"),
        ({"ipv6_prefix": True}, "ipv6_prefix"),
    ],
)
def test_client_ip_bad_configuration(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        keys.client_ip(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("header", ["X-Forwarded-For", "x-forwarded-for", "Forwarded",
                                    "X-Real-IP", " x-real-ip ", "True-Client-IP",
                                    "CF-Connecting-IP", "Fly-Client-IP", "X-Client-IP"])
def test_client_ip_known_headers(header: str) -> None:
    key = keys.client_ip(trusted_hops=1, header=header)
    assert callable(key)
    name = header.strip()
    value = "for=1.2.3.4" if name.lower() == "forwarded" else "1.2.3.4"
    assert key(req(PEER, {name: value})) == ipkey("1.2.3.4")


# --- api_key --------------------------------------------------------------------------

SECRET = "s3cr3t-TOKEN-xyz_QRS"


def test_api_key_hashes_the_secret() -> None:
    key = keys.api_key("X-API-Key")
    identity = key(req(headers={"X-API-Key": SECRET}))
    assert identity is not None
    assert SECRET not in identity
    assert SECRET.lower() not in identity.lower()
    assert identity.startswith("key:")
    # Deterministic: the same secret is the same identity, on any key function instance.
    assert keys.api_key("x-api-key")(req("198.51.100.1", {"x-api-key": SECRET})) == identity


def test_api_key_distinct_secrets_distinct_identities() -> None:
    key = keys.api_key()
    ids = {key(req(headers={"X-API-Key": f"secret-{i}"})) for i in range(200)}
    assert len(ids) == 200


@given(st.text(min_size=8, max_size=64).filter(lambda s: s.strip() == s and s.isprintable()))
def test_api_key_never_contains_the_raw_secret(secret: str) -> None:
    identity = keys.api_key()(req(headers={"X-API-Key": secret}))
    assert identity is not None
    assert secret not in identity


def test_api_key_reads_the_query_parameter() -> None:
    key = keys.api_key("X-API-Key", query="api_key")
    from_query = key(req(query=f"x=1&api_key={SECRET}&y=2"))
    from_header = key(req(headers={"X-API-Key": SECRET}))
    assert from_query is not None
    assert SECRET not in from_query
    assert from_query == from_header  # one key, one counter, wherever it was sent


def test_api_key_query_only() -> None:
    key = keys.api_key(None, query="token")
    identity = key(req(query="token=abc%20def"))
    assert identity == keys.api_key()(req(headers={"X-API-Key": "abc def"}))
    assert key(req(headers={"X-API-Key": "abc def"})) is None  # header not configured


def test_api_key_ignores_query_unless_configured() -> None:
    key = keys.api_key("X-API-Key")
    assert key(req(query=f"api_key={SECRET}")) is None


def test_api_key_header_wins_over_query() -> None:
    key = keys.api_key("X-API-Key", query="api_key")
    assert key(req(headers={"X-API-Key": "a"}, query="api_key=b")) == key(
        req(headers={"X-API-Key": "a"}))


@pytest.mark.parametrize("headers", [None, {}, {"X-API-Key": ""}, {"Other": SECRET}])
def test_api_key_absent_falls_through(headers: dict[str, str] | None) -> None:
    # None: the middleware asks its next key (its own key=, else the socket peer).
    assert keys.api_key()(req(headers=headers)) is None
    assert keys.api_key(query="k")(req(headers=headers, query="k=")) is None
    assert keys.api_key()(req(headers={"X-API-Key": "k"})) is not None


@pytest.mark.parametrize("blank", ["   ", "\t", " \t "])
def test_api_key_blank_is_no_key(blank: str) -> None:
    # A blank key used to hash to one shared identity for every client sending it.
    assert keys.api_key()(req(headers={"X-API-Key": blank})) is None
    assert keys.api_key(None, query="k")(req(query="k=%20%20")) is None
    fallback = keys.api_key(fallback=keys.client_ip())
    assert fallback(req("198.51.100.9", {"X-API-Key": blank})) == ipkey("198.51.100.9")


def test_api_key_fallback_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="fallback"):
        keys.api_key(fallback="ip")  # type: ignore[arg-type]


def test_api_key_custom_fallback() -> None:
    key = keys.api_key(fallback=keys.shared("anon"))
    assert key(req()) == "shared:anon"


def test_api_key_needs_a_source() -> None:
    with pytest.raises(ConfigurationError, match="header"):
        keys.api_key(None)


# --- header / shared / chain ----------------------------------------------------------


def test_header_key_hashed_by_default() -> None:
    key = keys.header("X-User-Id")
    identity = key(req(headers={"x-user-id": "alice-1234"}))
    assert identity is not None
    assert "alice-1234" not in identity
    assert identity == key(req("198.51.100.1", {"X-User-Id": "alice-1234"}))
    assert identity != key(req(headers={"x-user-id": "bob-5678"}))
    assert key(req()) is None
    assert key(req(headers={"x-user-id": ""})) is None


def test_header_key_unhashed() -> None:
    key = keys.header("X-User-Id", hashed=False)
    identity = key(req(headers={"x-user-id": "42"}))
    assert identity is not None
    assert identity.endswith("42")
    assert identity != keys.header("X-Tenant", hashed=False)(req(headers={"x-tenant": "42"}))


def test_shared_is_one_identity_for_everyone() -> None:
    key = keys.shared()
    assert key(req(PEER)) == key(req("198.51.100.1")) == key(req(None)) == "shared:all"
    assert keys.shared("export")(req()) != key(req())


def test_chain_first_non_none_wins() -> None:
    key = keys.chain(keys.header("X-User-Id"), keys.api_key(),
                     keys.client_ip())
    user = key(req(headers={"X-User-Id": "u", "X-API-Key": "k"}))
    assert user == keys.header("X-User-Id")(req(headers={"X-User-Id": "u"}))
    api = key(req(headers={"X-API-Key": "k"}))
    assert api == keys.api_key()(req(headers={"X-API-Key": "k"}))
    assert key(req()) == ipkey(PEER)


def test_chain_all_none_is_none() -> None:
    assert keys.chain(keys.header("X-A"), keys.header("X-B"))(req()) is None


def test_chain_needs_callables() -> None:
    with pytest.raises(ConfigurationError, match="at least one"):
        keys.chain()
    with pytest.raises(ConfigurationError, match="not callable"):
        keys.chain(keys.shared(), "client_ip")  # type: ignore[arg-type]


# -- client_in: a network allow-list with client_ip's trust -----------------------------


def test_client_in_default_trust_is_the_socket_peer() -> None:
    inside = keys.client_in(["10.0.0.0/8", "2001:db8::/32"])
    assert inside(RequestInfo("GET", "/", client="10.1.2.3"))
    assert inside(RequestInfo("GET", "/", client="2001:db8::1"))
    assert inside(RequestInfo("GET", "/", client="::ffff:10.1.2.3"))
    assert not inside(RequestInfo("GET", "/", client="203.0.113.7"))
    assert not inside(RequestInfo("GET", "/", client="unix-socket"))
    assert not inside(RequestInfo("GET", "/"))
    # No proxy configured: the header is the client's claim, never read.
    assert not inside(RequestInfo("GET", "/", client="203.0.113.7",
                                  headers={"X-Forwarded-For": "10.0.0.1"}))


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
def test_client_in_spoofed_header_from_untrusted_peer_is_not_inside(header: str) -> None:
    value = "for=10.0.0.1" if header == "Forwarded" else "10.0.0.1"
    inside = keys.client_in(["10.0.0.0/8"], trusted_proxies=["192.0.2.0/24"], header=header)
    forged = RequestInfo("GET", "/", client="203.0.113.7", headers={header: value})
    assert not inside(forged)
    relayed = RequestInfo("GET", "/", client="192.0.2.10", headers={header: value})
    assert inside(relayed)


def test_client_in_walks_like_client_ip() -> None:
    trust = {"trusted_proxies": ["192.0.2.0/24"]}
    inside = keys.client_in(["10.0.0.0/8"], **trust)  # type: ignore[arg-type]
    key = keys.client_ip(**trust)  # type: ignore[arg-type]
    for xff, expected in [("10.0.0.1", True), ("10.0.0.1, 203.0.113.7", False),
                          ("203.0.113.7, 10.0.0.1", True), ("10.0.0.1, 192.0.2.5", True),
                          ("10.0.0.1, junk", False)]:
        request = RequestInfo("GET", "/", client="192.0.2.10",
                              headers={"X-Forwarded-For": xff})
        assert inside(request) is expected, xff
        assert (key(request) or "").startswith("ip:10.") is expected, xff


def test_client_in_trusted_hops() -> None:
    inside = keys.client_in(["10.0.0.0/8"], trusted_hops=1)
    assert inside(RequestInfo("GET", "/", client="192.0.2.10",
                              headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"}))
    assert not inside(RequestInfo("GET", "/", client="192.0.2.10",
                                  headers={"X-Forwarded-For": "10.0.0.1, 203.0.113.7"}))


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (("10.0.0.0/8",), {}, "list of CIDRs"),
    (([],), {}, "at least one network"),
    ((["not-a-net"],), {}, r"client_in\(networks=...\): 'not-a-net'"),
    ((["10.0.0.0/8"],), {"trusted_proxies": ["x"]}, r"client_in\(trusted_proxies"),
    ((["10.0.0.0/8"],), {"trusted_proxies": ["10.0.0.0/8"], "trusted_hops": 1}, "not both"),
    ((["10.0.0.0/8"],), {"trusted_hops": 0}, r"client_in\(trusted_hops=0\)"),
    ((["10.0.0.0/8"],), {"header": "X-Bogus"}, r"client_in\(header='X-Bogus'\)"),
])
def test_client_in_bad_configuration(args: tuple[object, ...], kwargs: dict[str, object],
                                     match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        keys.client_in(*args, **kwargs)  # type: ignore[arg-type]
