"""Our ``EVALSHA`` packing (the direct sync path's and the batcher's) writes exactly the
bytes redis-py's packers write: integer and string arguments, keys and strings in the
client's encoding."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio.connection
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Connection, PythonRespSerializer

from ratelimit_mw._storage.resp import EvalshaPacker

SHA = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
ascii_text = st.text(st.characters(max_codepoint=127), max_size=40)
keys = st.lists(text | ascii_text, max_size=4)
args = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1) | text | ascii_text,
                max_size=10)


def redis_py(connection: Connection, call_keys: list[str],
             call_args: list[int | str]) -> list[bytes]:
    """What redis-py writes for the same call: the sync connection's own packer
    (hiredis's where it is installed), the pure-Python one, and the asyncio
    connection's."""
    command = ("EVALSHA", SHA, len(call_keys), *call_keys, *call_args)
    kwargs = connection.encoder.encoding, connection.encoder.encoding_errors
    asyncio_connection = redis.asyncio.connection.Connection(
        encoding=kwargs[0], encoding_errors=kwargs[1])
    return [b"".join(connection.pack_command(*command)),
            b"".join(PythonRespSerializer(6000, connection.encoder.encode).pack(*command)),
            b"".join(asyncio_connection.pack_commands([command]))]


def packed(connection: Connection, call_keys: list[str],
           call_args: list[int | str]) -> list[bytes]:
    value = EvalshaPacker(SHA, connection.encoder)(call_keys, call_args)
    return [value] * 3


@given(keys, args)
def test_same_bytes_as_redis_py(call_keys: list[str], call_args: list[int | str]) -> None:
    connection = Connection()
    assert packed(connection, call_keys, call_args) == redis_py(connection, call_keys,
                                                                  call_args)


@given(keys, args, st.sampled_from(["latin-1", "cp1252", "utf-8"]))
def test_same_bytes_in_other_encodings(call_keys: list[str], call_args: list[int | str],
                                       encoding: str) -> None:
    connection = Connection(encoding=encoding, encoding_errors="replace")
    assert packed(connection, call_keys, call_args) == redis_py(connection, call_keys,
                                                                  call_args)


def test_strings_are_utf8_by_default() -> None:
    connection = Connection()
    call = (["k\xe9"], [1, "lease-\xe9", 7])
    assert packed(connection, *call) == redis_py(connection, *call)
    assert packed(connection, *call)[0].count(b"\xc3\xa9") == 2


def test_the_client_encoding_is_used() -> None:
    connection = Connection(encoding="latin-1")
    call = (["LIMITER:{/caf\xe9/ip:203.0.113.7}/5/1/minute"], [1, 5, "caf\xe9", 1])
    assert packed(connection, *call) == redis_py(connection, *call)
    assert b"caf\xe9" in packed(connection, *call)[0]
    assert b"caf\xc3\xa9" not in packed(connection, *call)[0]


def test_a_typical_call() -> None:
    value = EvalshaPacker(SHA, Connection().encoder)(["k"], [1, 100, 60, "ab12"])
    assert value == (b"*8\r\n$7\r\nEVALSHA\r\n$40\r\n" + SHA.encode() + b"\r\n$1\r\n1\r\n"
                     b"$1\r\nk\r\n$1\r\n1\r\n$3\r\n100\r\n$2\r\n60\r\n$4\r\nab12\r\n")


def test_a_bool_is_refused_as_redis_py_refuses_it() -> None:
    connection = Connection()
    with pytest.raises(redis.DataError) as ours:
        EvalshaPacker(SHA, connection.encoder)(["k"], [True])
    with pytest.raises(redis.DataError) as theirs:
        connection.pack_command("EVALSHA", SHA, 1, "k", True)
    assert str(ours.value) == str(theirs.value)
