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

# Most arguments of a check are small integers (counts, flags, strategy numbers, costs,
# windows in seconds): their bulk strings are written once, here.
_SMALL_END = 4096
_SMALL = [b"$%d\r\n%d\r\n" % (len(b"%d" % number), number) for number in range(_SMALL_END)]


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
        out: list[bytes] = []
        self.write(out, keys, args)
        return b"".join(out)

    def write(self, out: list[bytes], keys: Sequence[str], args: Sequence[int | str]) -> None:
        """Append one call's pieces to *out*: a pipeline of calls is joined once."""
        encoder = self._encoder
        encoding, errors = encoder.encoding, encoder.encoding_errors
        out += (b"*%d\r\n" % (3 + len(keys) + len(args)), self._head, _integer(len(keys)))
        for key in keys:
            value = key.encode(encoding, errors)
            out.append(b"$%d\r\n%s\r\n" % (len(value), value))
        for arg in args:
            # type(), not isinstance: a bool goes to the encoder, which refuses it.
            if type(arg) is int:
                out.append(_SMALL[arg] if 0 <= arg < _SMALL_END else _integer(arg))
            elif arg == "":  # the lease of a plan that takes none
                out.append(b"$0\r\n\r\n")
            else:
                value = encoder.encode(arg)
                out.append(b"$%d\r\n%s\r\n" % (len(value), value))

def _integer(number: int) -> bytes:
    """The bulk string of *number* in decimal."""
    if 0 <= number < _SMALL_END:
        return _SMALL[number]
    value = b"%d" % number
    return b"$%d\r\n%s\r\n" % (len(value), value)
