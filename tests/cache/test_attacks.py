"""The cache under an attacker's input ("Bounded under attack"): each test replays one
input of that run and states the bound it must keep, as a count or a size."""

from __future__ import annotations

from tests.cache.harness import ASGI, AnyCache, Interface, Reply, Seen

# --- the query's normal form: a repeated name keeps the order of its values --------------


def echo_a(seen: Seen, n: int) -> Reply:
    """The value of ``a`` as the framework reads it (Starlette: the last, Flask: the first)."""
    return Reply(f"a={seen.args['a']} #{n}", headers={"Cache-Control": "max-age=60"})


async def test_the_order_of_a_repeated_name_is_two_entries(interface: Interface,
                                                           cache: AnyCache) -> None:
    """``?a=1&a=2`` and ``?a=2&a=1`` are different requests to Starlette and to Flask:
    never one entry served for both."""
    upstream, app = interface.cached(cache, echo_a)
    async with interface.client(app) as c:
        bodies = [(await c.get(f"/q?{query}")).content
                  for query in ("a=1&a=2", "a=2&a=1", "a=1&a=2", "a=2&a=1")]
    if interface is ASGI:  # Starlette reads the last value
        assert bodies == [b"a=2 #1", b"a=1 #2", b"a=2 #1", b"a=1 #2"]
    else:  # Flask reads the first
        assert bodies == [b"a=1 #1", b"a=2 #2", b"a=1 #1", b"a=2 #2"]
    assert upstream.calls == 2

