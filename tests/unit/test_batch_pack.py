"""The batcher's own RESP packing writes exactly the bytes redis-py's packer writes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from ratelimit_mw._storage.batch import _pack

SHA = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"

keys = st.lists(st.text(st.characters(blacklist_categories=["Cs"]), max_size=40), max_size=4)
ints = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=10)


def redis_py(connection: Connection, calls: list[tuple[list[str], list[int]]]) -> bytes:
    return b"".join(connection.pack_commands(
        [("EVALSHA", SHA, len(k), *k, *a) for k, a in calls]))


@given(st.lists(st.tuples(keys, ints), min_size=1, max_size=5))
def test_same_bytes_as_redis_py(calls: list[tuple[list[str], list[int]]]) -> None:
    connection = Connection()
    assert _pack(SHA, calls, connection.encoder) == redis_py(connection, calls)


def test_the_connection_encoding_is_used() -> None:
    connection = Connection(encoding="latin-1")
    calls = [(["LIMITER:{/caf\xe9/ip:203.0.113.7}/5/1/minute"], [1, 5, 60, 1])]
    packed = _pack(SHA, calls, connection.encoder)
    assert packed == redis_py(connection, calls)
    assert b"caf\xe9" in packed  # latin-1, not UTF-8's b"caf\xc3\xa9"


def test_a_typical_call() -> None:
    packed = _pack(SHA, [(["k"], [1, 100, 60, 1])], Connection().encoder)
    assert packed == (b"*8\r\n$7\r\nEVALSHA\r\n$40\r\n" + SHA.encode() + b"\r\n$1\r\n1\r\n"
                      b"$1\r\nk\r\n$1\r\n1\r\n$3\r\n100\r\n$2\r\n60\r\n$1\r\n1\r\n")
