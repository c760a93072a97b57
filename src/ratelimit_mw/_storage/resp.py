"""``EVALSHA`` calls in RESP, byte for byte what redis-py's packers write. No I/O.

The direct sync path (`sync_script`) and the asyncio batcher (`batch`) write their script
calls themselves rather than through redis-py's packer, which is general over every value
type and, on the batcher's side, wrapped in its pipeline's layers. A check sends keys,
integers and the odd string (a concurrency lease): this packs exactly those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["EvalshaPacker"]


class EvalshaPacker:
    """Packs the ``EVALSHA`` calls of one script for one client's encoding.

    Example::

        pack = EvalshaPacker(script.sha, client.get_encoder())
        connection.send_packed_command((pack(["k"], [1, 60, 1]),))

    Keys and string arguments are encoded as the client encodes them (its *encoder*:
    UTF-8 unless the client says otherwise), integers are written in decimal, and any
    other value goes to the encoder, which refuses what redis-py refuses (a ``bool``).
    """

    __slots__ = ("_encoder", "_head")

    def __init__(self, sha: str, encoder: Any) -> None:
        self._encoder = encoder
        head = sha.encode()
        self._head = b"$7\r\nEVALSHA\r\n$%d\r\n%s\r\n" % (len(head), head)

    def __call__(self, keys: Sequence[str], args: Sequence[int | str]) -> bytes:
        """One call: the script's sha, the number of keys, the keys, the arguments."""
        encoder = self._encoder
        encoding, errors = encoder.encoding, encoder.encoding_errors
        count = b"%d" % len(keys)
        out = [b"*%d\r\n" % (3 + len(keys) + len(args)), self._head,
               b"$%d\r\n%s\r\n" % (len(count), count)]
        for key in keys:
            value = key.encode(encoding, errors)
            out.append(b"$%d\r\n%s\r\n" % (len(value), value))
        for arg in args:
            # type(), not isinstance: a bool goes to the encoder, which refuses it.
            value = b"%d" % arg if type(arg) is int else encoder.encode(arg)
            out.append(b"$%d\r\n%s\r\n" % (len(value), value))
        return b"".join(out)
