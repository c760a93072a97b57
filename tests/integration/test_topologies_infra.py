"""The Cluster and Sentinel test infrastructure works: real topologies come up, ``limits``
storages built from their URLs rate-limit correctly (sync and async, every strategy),
hash tags pin keys to one slot, and a Sentinel failover is survived."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies
import pytest
import redis
import redis.cluster
import redis.exceptions

from tests.redis_topologies import (
    PrivateCluster,
    PrivateSentinel,
    SpawnError,
    _spawn,
    aclose_limits_storage,
    close_limits_storage,
    command,
    redis_cluster,
    redis_sentinel,
    wait_until,
)

pytestmark = pytest.mark.redis

__all__ = ["redis_cluster", "redis_sentinel"]  # fixtures, re-exported for pytest

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter"]
SYNC = {
    "fixed-window": limits.strategies.FixedWindowRateLimiter,
    "moving-window": limits.strategies.MovingWindowRateLimiter,
    "sliding-window-counter": limits.strategies.SlidingWindowCounterRateLimiter,
}
ASYNC = {
    "fixed-window": limits.aio.strategies.FixedWindowRateLimiter,
    "moving-window": limits.aio.strategies.MovingWindowRateLimiter,
    "sliding-window-counter": limits.aio.strategies.SlidingWindowCounterRateLimiter,
}
THREE_PER_MINUTE = limits.parse("3/minute")
EXPECTED = [True, True, True, False, False]

T = TypeVar("T")


def unique() -> str:
    return uuid.uuid4().hex


def retry(call: Callable[[], T], timeout: float = 20.0) -> T:
    """``call()``, retried on Redis errors for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def aretry(call: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def five_hits(limiter: Any, key: str) -> list[bool]:
    return [limiter.hit(THREE_PER_MINUTE, key) for _ in range(5)]


async def afive_hits(limiter: Any, key: str) -> list[bool]:
    return [await limiter.hit(THREE_PER_MINUTE, key) for _ in range(5)]


# -- Cluster --------------------------------------------------------------------------


def test_cluster_is_up(redis_cluster: PrivateCluster) -> None:
    ports = redis_cluster.ports
    assert len(set(ports)) == 3
    assert redis_cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    assert redis_cluster.nodes == [("127.0.0.1", p) for p in ports]
    for port in ports:
        assert redis_cluster.cluster_state(port) == "ok"
    masters = [line for line in redis_cluster.execute("CLUSTER", "NODES").splitlines()
               if "master" in line.split()[2]]
    assert len(masters) == 3
    assert redis_cluster.startup_seconds < 30


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cluster_limits_sync(redis_cluster: PrivateCluster, strategy: str) -> None:
    storage = limits.storage.storage_from_string(redis_cluster.url)
    try:
        assert isinstance(storage, limits.storage.RedisClusterStorage)
        key = unique()
        assert five_hits(SYNC[strategy](storage), key) == EXPECTED
        holders = {
            port: redis_cluster.execute("KEYS", f"*{key}*", port=port)
            for port in redis_cluster.ports
        }
        (written,) = [k for keys in holders.values() for k in keys]
        if strategy == "sliding-window-counter":
            # Its two keys, "LIMITS:{k}" and "LIMITS:{k}/-1" (written when the window
            # shifts), share the hash tag limits adds, so one Lua script can touch both.
            assert written.startswith("LIMITS:{")
            assert written.endswith("}")
            slots = {redis_cluster.execute("CLUSTER", "KEYSLOT", name)
                     for name in (written, f"{written}/-1")}
            assert len(slots) == 1
    finally:
        close_limits_storage(storage)


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_cluster_limits_async(redis_cluster: PrivateCluster, strategy: str) -> None:
    storage = limits.storage.storage_from_string(
        f"async+{redis_cluster.url}", implementation="redispy"
    )
    try:
        assert isinstance(storage, limits.aio.storage.RedisClusterStorage)
        assert await afive_hits(ASYNC[strategy](storage), unique()) == EXPECTED
    finally:
        await aclose_limits_storage(storage)


def test_hash_tag_keys_share_a_slot(redis_cluster: PrivateCluster) -> None:
    for port in redis_cluster.ports:  # every node computes the same slot
        tagged = {redis_cluster.execute("CLUSTER", "KEYSLOT", key, port=port)
                  for key in ("{tag}a", "{tag}b")}
        assert len(tagged) == 1
        assert tagged == {redis_cluster.execute("CLUSTER", "KEYSLOT", "tag", port=port)}
    plain = {redis_cluster.execute("CLUSTER", "KEYSLOT", key) for key in ("a", "b")}
    assert len(plain) == 2  # without a tag the two keys land in different slots

    client = redis.cluster.RedisCluster(
        startup_nodes=[redis.cluster.ClusterNode(*node) for node in redis_cluster.nodes]
    )
    try:
        tag = unique()
        # Multi-key commands need one slot: fine with a shared tag...
        assert client.execute_command("MSET", f"{{{tag}}}a", 1, f"{{{tag}}}b", 2)
        assert client.execute_command("MGET", f"{{{tag}}}a", f"{{{tag}}}b") == [b"1", b"2"]
        # ...refused without one.
        with pytest.raises(redis.exceptions.RedisClusterException, match="same key slot"):
            client.execute_command("MSET", f"{tag}a", 1, f"{tag}b", 2)
    finally:
        client.close()


def test_cluster_kill_and_stop() -> None:
    cluster = PrivateCluster(node_timeout_ms=1000)  # a quicker failure detection
    try:
        directory = cluster.dir
        processes = list(cluster.processes.values())
        victim, survivor = cluster.ports[0], cluster.ports[1]
        cluster.kill(victim)
        assert victim not in cluster.ports
        assert f":{victim}" not in cluster.url
        # No replicas: the victim's slots are uncovered once cluster-node-timeout passes.
        wait_until(lambda: cluster.cluster_state(survivor) == "fail", 30,
                   "a survivor to report cluster_state:fail")
    finally:
        cluster.stop()
    assert all(process.poll() is not None for process in processes)
    assert not Path(directory).exists()
    assert cluster.processes == {}


# -- Sentinel -------------------------------------------------------------------------


def test_sentinel_is_up(redis_sentinel: PrivateSentinel) -> None:
    s = redis_sentinel
    assert len({s.master_port, s.replica_port, s.sentinel_port}) == 3
    assert s.url == f"redis+sentinel://127.0.0.1:{s.sentinel_port}/mymaster"
    assert s.master_address() == ("127.0.0.1", s.master_port)
    assert s.role(s.master_port) == "master"
    assert s.role(s.replica_port) == "slave"
    assert command(s.sentinel_port, "PING") is True
    assert s.startup_seconds < 30


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sentinel_limits_sync(redis_sentinel: PrivateSentinel, strategy: str) -> None:
    storage = limits.storage.storage_from_string(redis_sentinel.url)
    try:
        assert isinstance(storage, limits.storage.RedisSentinelStorage)
        key = unique()
        assert five_hits(SYNC[strategy](storage), key) == EXPECTED
        assert command(redis_sentinel.master_port, "KEYS", f"*{key}*")  # written there
    finally:
        close_limits_storage(storage)


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_sentinel_limits_async(redis_sentinel: PrivateSentinel, strategy: str) -> None:
    storage = limits.storage.storage_from_string(
        f"async+{redis_sentinel.url}", implementation="redispy"
    )
    try:
        assert isinstance(storage, limits.aio.storage.RedisSentinelStorage)
        assert await afive_hits(ASYNC[strategy](storage), unique()) == EXPECTED
    finally:
        await aclose_limits_storage(storage)


def test_sentinel_storage_reads_from_the_replica_by_default(
    redis_sentinel: PrivateSentinel,
) -> None:
    default = limits.storage.storage_from_string(redis_sentinel.url)
    primary_only = limits.storage.storage_from_string(redis_sentinel.url, use_replicas=False)
    try:
        writer = default.get_connection()
        assert writer.info("replication")["role"] == "master"
        assert default.get_connection(readonly=True).info("replication")["role"] == "slave"
        reader = primary_only.get_connection(readonly=True)
        assert reader.info("replication")["role"] == "master"
    finally:
        close_limits_storage(default)
        close_limits_storage(primary_only)


def test_sentinel_failover_sync(redis_sentinel: PrivateSentinel) -> None:
    s = redis_sentinel
    old_master, old_replica = s.master_port, s.replica_port
    storage = limits.storage.storage_from_string(s.url, use_replicas=False)
    try:
        before = {name: unique() for name in STRATEGIES}
        for name, key in before.items():
            limiter = SYNC[name](storage)
            assert [limiter.hit(THREE_PER_MINUTE, key) for _ in range(2)] == [True, True]
        assert command(old_master, "WAIT", 1, 2000) == 1  # the replica has the counters

        s.failover()
        assert (s.master_port, s.replica_port) == (old_replica, old_master)
        assert s.master_address() == ("127.0.0.1", old_replica)

        for name in STRATEGIES:
            limiter = SYNC[name](storage)
            # The counters survived: one hit left of three.
            assert retry(partial(limiter.hit, THREE_PER_MINUTE, before[name]))
            assert not limiter.hit(THREE_PER_MINUTE, before[name])
            assert five_hits(limiter, unique()) == EXPECTED
        assert storage.get_connection().info("replication")["role"] == "master"
        assert command(s.master_port, "DBSIZE") > 0
    finally:
        close_limits_storage(storage)


async def test_sentinel_failover_async(redis_sentinel: PrivateSentinel) -> None:
    s = redis_sentinel
    storage = limits.storage.storage_from_string(
        f"async+{s.url}", implementation="redispy", use_replicas=False
    )
    try:
        before = {name: unique() for name in STRATEGIES}
        for name, key in before.items():
            limiter = ASYNC[name](storage)
            assert [await limiter.hit(THREE_PER_MINUTE, key) for _ in range(2)] == [True, True]
        assert command(s.master_port, "WAIT", 1, 2000) == 1

        s.failover()  # blocking, but nothing else runs on this loop meanwhile

        for name in STRATEGIES:
            limiter = ASYNC[name](storage)
            assert await aretry(partial(limiter.hit, THREE_PER_MINUTE, before[name]))
            assert not await limiter.hit(THREE_PER_MINUTE, before[name])
            assert await afive_hits(limiter, unique()) == EXPECTED
    finally:
        await aclose_limits_storage(storage)


# -- Failure modes --------------------------------------------------------------------


def test_a_taken_port_is_reported_as_a_clash(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "redis.log"
        with pytest.raises(SpawnError, match=f"port {port}") as failure:
            _spawn(shutil.which("redis-server") or "redis-server",
                   ["--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--logfile", str(log)], port, log, timeout=10)
    assert failure.value.port_clash


def test_no_redis_server_is_a_clear_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="redis-server is not on PATH"):
        PrivateCluster()
    with pytest.raises(RuntimeError, match="redis-server is not on PATH"):
        PrivateSentinel()
