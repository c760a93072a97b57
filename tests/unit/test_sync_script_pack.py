"""The direct sync path's RESP packing writes exactly the bytes redis-py's packers write:
integer and string arguments, keys and strings in the client's encoding."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Connection, PythonRespSerializer

from ratelimit_mw._storage.sync_script import pack_evalsha

SHA = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
HEAD = b"$7\r\nEVALSHA\r\n$40\r\n" + SHA.encode() + b"\r\n"

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
keys = st.lists(text, max_size=4)
args = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1) | text, max_size=10)


def redis_py(connection: Connection, call_keys: list[str],
             call_args: list[int | str]) -> list[bytes]:
    """What redis-py writes for the same call: the connection's own packer (hiredis's
    where it is installed) and the pure-Python one."""
    command = ("EVALSHA", SHA, len(call_keys), *call_keys, *call_args)
    return [b"".join(connection.pack_command(*command)),
            b"".join(PythonRespSerializer(6000, connection.encoder.encode).pack(*command))]


@given(keys, args)
def test_same_bytes_as_redis_py(call_keys: list[str], call_args: list[int | str]) -> None:
    connection = Connection()
    packed = pack_evalsha(HEAD, call_keys, call_args, connection.encoder)
    assert [packed, packed] == redis_py(connection, call_keys, call_args)


def test_strings_are_utf8_by_default() -> None:
    connection = Connection()
    packed = pack_evalsha(HEAD, ["k\xe9"], [1, "lease-\xe9", 7], connection.encoder)
    assert [packed, packed] == redis_py(connection, ["k\xe9"], [1, "lease-\xe9", 7])
    assert packed.count(b"\xc3\xa9") == 2


def test_the_client_encoding_is_used() -> None:
    connection = Connection(encoding="latin-1")
    call = (["LIMITER:{/caf\xe9/ip:203.0.113.7}/5/1/minute"], [1, 5, "caf\xe9", 1])
    packed = pack_evalsha(HEAD, *call, connection.encoder)
    assert [packed, packed] == redis_py(connection, *call)
    assert b"caf\xe9" in packed
    assert b"caf\xc3\xa9" not in packed


def test_a_typical_call() -> None:
    packed = pack_evalsha(HEAD, ["k"], [1, 100, 60, "ab12"], Connection().encoder)
    assert packed == (b"*8\r\n$7\r\nEVALSHA\r\n$40\r\n" + SHA.encode() + b"\r\n$1\r\n1\r\n"
                      b"$1\r\nk\r\n$1\r\n1\r\n$3\r\n100\r\n$2\r\n60\r\n$4\r\nab12\r\n")


def test_a_bool_is_refused_as_redis_py_refuses_it() -> None:
    connection = Connection()
    with pytest.raises(redis.DataError) as ours:
        pack_evalsha(HEAD, ["k"], [True], connection.encoder)  # type: ignore[list-item]
    with pytest.raises(redis.DataError) as theirs:
        connection.pack_command("EVALSHA", SHA, 1, "k", True)
    assert str(ours.value) == str(theirs.value)
