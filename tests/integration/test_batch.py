"""Concurrent async checks go to Redis as one pipeline per event-loop tick.

Counted on private servers: MONITOR shows every command in order (a pipeline's commands
arrive together, from one client address); the pool shows how many connections the
checks took. Correctness under batching: exact admission counts, NOSCRIPT, failures
and cancellations.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from ratelimit_mw import AsyncRateLimiter, RedisOptions, Rule, StorageError
from ratelimit_mw._core import Policy
from ratelimit_mw._request import RequestInfo
from ratelimit_mw._storage.batch import ScriptBatcher
from tests.helpers import PATIENT
from tests.redis_monitor import Monitor, client_commands
from tests.redis_server import PrivateRedis


def plan(limits: str = "100/minute", client: str = "203.0.113.7", path: str = "/x") -> Any:
    policy = Policy(default_limits=limits, rules=[Rule(path, limits)])
    return policy.plan(RequestInfo("GET", path, client=client))


def evalsha_by_connection(lines: list[str]) -> Counter[str]:
    """How many EVALSHAs each client address (one connection) sent."""
    out: Counter[str] = Counter()
    for line in lines:
        where, _, rest = line.partition("] ")
        if " lua" not in where and rest.startswith('"EVALSHA"'):
            out[where.rsplit(" ", 1)[1]] += 1
    return out


def connections(server: PrivateRedis) -> int:
    """The client connections the server has, besides the one asking."""
    with redis.Redis(port=server.port) as admin:
        return len(admin.client_list()) - 1


async def test_concurrent_checks_share_one_connection(private_redis: PrivateRedis,
                                                      strategy: str, tmp_path: Path) -> None:
    limiter = AsyncRateLimiter(private_redis.url, strategy=strategy,  # type: ignore[arg-type]
                               redis_options=PATIENT)
    await limiter.acheck(plan())  # connect and load the script
    monitor = Monitor(private_redis.port, tmp_path / "monitor.txt")
    decisions = await asyncio.gather(*(limiter.acheck(plan(client=f"10.0.0.{n}"))
                                       for n in range(50)))
    lines = monitor.stop()
    await limiter.aclose()
    assert client_commands(lines).count("EVALSHA") == 50
    # The first check went alone (nothing was in flight); the 49 that came while it was
    # out went as one pipeline on one connection, where one each would have taken up to
    # 49 connections.
    assert sorted(evalsha_by_connection(lines).values()) in ([1, 49], [50])
    assert all(d.allowed and d.quotas[0].remaining == 99 for d in decisions)


async def test_batch_off_uses_one_connection_per_concurrent_check(
        private_redis: PrivateRedis) -> None:
    limiter = AsyncRateLimiter(private_redis.url, redis_options=RedisOptions(batch=False))
    await asyncio.gather(*(limiter.acheck(plan(client=f"10.0.0.{n}")) for n in range(20)))
    assert connections(private_redis) > 1
    await limiter.aclose()


async def test_batched_admission_is_exact(private_redis: PrivateRedis, strategy: str) -> None:
    # 300 concurrent requests of one client against 100/minute with 3 limits: exactly
    # 100 admitted, and the refused ones consumed nothing (all-or-nothing per request).
    limiter = AsyncRateLimiter(private_redis.url, strategy=strategy,  # type: ignore[arg-type]
                               redis_options=PATIENT)
    limits = "100/minute;1000/hour;10000/day"
    decisions = await asyncio.gather(*(limiter.acheck(plan(limits)) for _ in range(300)))
    assert sum(d.allowed for d in decisions) == 100
    remaining = sorted(d.quotas[1].remaining for d in decisions if d.allowed)
    assert remaining == list(range(900, 1000))
    final = await limiter.acheck(plan(limits))
    assert not final.allowed
    assert final.quotas[1].remaining == 900
    await limiter.aclose()


async def test_batched_noscript_after_flush_is_reloaded(private_redis: PrivateRedis) -> None:
    limiter = AsyncRateLimiter(private_redis.url, redis_options=PATIENT)
    await limiter.acheck(plan())
    redis.Redis(port=private_redis.port).script_flush()  # what a restart does to the cache
    decisions = await asyncio.gather(*(limiter.acheck(plan()) for _ in range(20)))
    assert sorted(d.quotas[0].remaining for d in decisions) == list(range(79, 99))
    await limiter.aclose()


async def test_a_batch_on_a_dead_server_fails_every_check_as_storage_error(
        private_redis: PrivateRedis) -> None:
    limiter = AsyncRateLimiter(private_redis.url)
    await limiter.acheck(plan())
    private_redis.kill()
    results = await asyncio.gather(*(limiter.acheck(plan()) for _ in range(10)),
                                   return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results), results
    await limiter.aclose()


@pytest.mark.parametrize("over", ["tcp", "unix"])
async def test_a_paused_server_times_out_as_storage_error(tmp_path: Path, over: str) -> None:
    # The batcher's own deadline: alone or batched, a server that stops answering is a
    # StorageError within socket_timeout (a unix-socket connection has no host to name).
    socket_path = tmp_path / "redis.sock"
    server = PrivateRedis("--unixsocket", str(socket_path), "--unixsocketperm", "700")
    try:
        url = f"redis+unix://{socket_path}" if over == "unix" else server.url
        limiter = AsyncRateLimiter(url, redis_options=RedisOptions(socket_timeout=0.2))
        await limiter.acheck(plan())
        server.pause()
        try:
            results = await asyncio.gather(*(limiter.acheck(plan()) for _ in range(5)),
                                           return_exceptions=True)
        finally:
            server.resume()
        assert all(isinstance(r, StorageError) for r in results), results
        assert "socket_timeout=0.2" in str(results[0])
        await limiter.aclose()
    finally:
        server.stop()


@pytest.mark.parametrize("concurrent", [1, 20])
async def test_a_restarted_server_is_used_at_once(private_redis: PrivateRedis,
                                                   concurrent: int) -> None:
    # After a restart the pooled connections are dead (redis-py hands them out all the
    # same) and the script is gone: a connection that fails before any reply is
    # replaced once, NOSCRIPT reloads the script, and the first checks already succeed
    # instead of opening the breaker.
    limiter = AsyncRateLimiter(private_redis.url)
    try:
        await asyncio.gather(*(limiter.acheck(plan()) for _ in range(concurrent)))
        private_redis.kill()
        private_redis.start()
        results = await asyncio.gather(*(limiter.acheck(plan()) for _ in range(concurrent)),
                                       return_exceptions=True)
    finally:
        await limiter.aclose()
    assert not [r for r in results if isinstance(r, BaseException)], results
    # Each counted once, on the new server (in any order: a retried call may come last).
    assert sorted(r.quotas[0].remaining for r in results) == list(range(100 - concurrent, 100))


async def test_cancelled_checks_do_not_disturb_the_rest(private_redis: PrivateRedis) -> None:
    limiter = AsyncRateLimiter(private_redis.url)
    await limiter.acheck(plan())
    tasks = [asyncio.ensure_future(limiter.acheck(plan())) for _ in range(20)]
    await asyncio.sleep(0)  # every task reaches the batcher
    for task in tasks[::2]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    kept = results[1::2]
    assert all(not isinstance(r, BaseException) and r.allowed for r in kept), kept
    # The first went alone (nothing was in flight): redis-py may still finish a call that
    # is already out when it is cancelled. The others were waiting for their batch.
    assert all(isinstance(r, asyncio.CancelledError) for r in results[2::2]), results[::2]
    # The connection is still good: the next check is answered, and the cancelled
    # requests were either counted or not, never half-counted.
    after = await limiter.acheck(plan())
    assert 99 - 21 <= after.quotas[0].remaining <= 99 - 11
    await limiter.aclose()


class Counting:
    """The real client; records how many commands each write to Redis carries."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sizes: list[int] = []
        pool = client.connection_pool
        get_connection = pool.get_connection

        async def counting_connection(*args: Any, **kwargs: Any) -> Any:
            connection = await get_connection(*args, **kwargs)
            if "send_packed_command" not in vars(connection):  # wrap each connection once
                send = connection.send_packed_command

                async def counted(command: Any, *args: Any, **kwargs: Any) -> Any:
                    packed = command if isinstance(command, bytes) else b"".join(command)
                    calls = packed.count(b"$7\r\nEVALSHA\r\n")
                    if calls:  # not SCRIPT LOAD
                        self.sizes.append(calls)
                    return await send(command, *args, **kwargs)

                connection.send_packed_command = counted
            return connection

        pool.get_connection = counting_connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


async def test_max_batch_bounds_one_pipeline(private_redis: PrivateRedis) -> None:
    client = redis.asyncio.Redis(port=private_redis.port)
    counting = Counting(client)
    script = client.register_script("return ARGV[1]")
    batcher = ScriptBatcher(counting, script, max_batch=8)
    await batcher(keys=["k"], args=[0])  # load the script
    assert counting.sizes == [1, 1]  # NOSCRIPT, then the call again after SCRIPT LOAD
    counting.sizes.clear()
    replies = await asyncio.gather(*(batcher(keys=["k"], args=[n]) for n in range(20)))
    assert [int(r) for r in replies] == list(range(20))  # each call got its own reply
    # The first went alone (nothing in flight), the other 19 in writes of at most 8. The
    # three writes go out on their own connections, in whichever order those connect.
    try:
        assert counting.sizes[0] == 1
        assert sorted(counting.sizes[1:]) == [3, 8, 8]
    finally:
        await batcher.aclose()
        await client.aclose()


async def test_a_lone_call_is_sent_at_once(private_redis: PrivateRedis,
                                           tmp_path: Path) -> None:
    # Nothing in flight: sent at once, alone, no waiting for the end of the tick.
    client = redis.asyncio.Redis(port=private_redis.port)
    counting = Counting(client)
    batcher = ScriptBatcher(counting, client.register_script("return ARGV[1]"))
    await batcher(keys=["k"], args=[0])  # connect and load the script
    counting.sizes.clear()
    monitor = Monitor(private_redis.port, tmp_path / "monitor.txt")
    for n in range(5):
        assert int(await batcher(keys=["k"], args=[n])) == n
    assert counting.sizes == [1] * 5
    assert client_commands(monitor.stop()) == ["EVALSHA"] * 5
    assert connections(private_redis) == 1
    await batcher.aclose()
    await client.aclose()


def test_batch_option_is_checked() -> None:
    from ratelimit_mw import ConfigurationError

    with pytest.raises(ConfigurationError, match="batch="):
        RedisOptions(batch="yes")  # type: ignore[arg-type]
