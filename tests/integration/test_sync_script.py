"""The sync limiter's direct script path (``_storage/sync_script.py``) on real Redis.

Each test compares with redis-py's own path where there is one to compare with: the same
limiter with its runner set back to the registered script (``client.evalsha``).
Destructive steps (``SCRIPT FLUSH``, ``CLIENT KILL``, a killed or paused server) run on
a private server of the test's own.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ratelimit_mw import (
    AsyncRateLimiter,
    RateLimiter,
    RedisOptions,
    Rule,
    StorageError,
    WSGIRateLimitMiddleware,
)
from ratelimit_mw._core import Plan, Policy
from ratelimit_mw._request import RequestInfo
from ratelimit_mw._storage.sync_script import ScriptRunner, fits
from tests.apps import flask_app
from tests.redis_monitor import Monitor, client_commands
from tests.redis_server import PrivateRedis
from tests.redis_topologies import (
    PrivateCluster,
    PrivateSentinel,
    command,
    redis_cluster,
    redis_sentinel,
    wait_until,
)

__all__ = ["redis_cluster", "redis_sentinel"]  # fixtures, re-exported for pytest


def plan(limits: str = "100/minute", client: str = "203.0.113.7", cost: int = 1) -> Plan:
    policy = Policy(default_limits=limits, rules=[Rule("/x", limits)])
    made = policy.plan(RequestInfo("GET", "/x", client=client))
    return made._replace(items=tuple(item._replace(cost=cost) for item in made.items))


def redis_py_path(limiter: RateLimiter) -> RateLimiter:
    """*limiter* sending its checks through redis-py's client, as before the direct path."""
    assert limiter._scripts is not None
    assert limiter._runner is not None
    limiter._runner.close()
    limiter._scripts.runner = limiter._scripts._script
    limiter._runner = None
    return limiter


def runner(limiter: RateLimiter) -> ScriptRunner:
    assert limiter._runner is not None
    return limiter._runner


def admin(server: PrivateRedis) -> redis.Redis:
    return redis.Redis(port=server.port)


# --------------------------------------------------------------------------- who gets it


def test_sync_standalone_limiters_take_the_direct_path(redis_url: str) -> None:
    limiter = RateLimiter(redis_url)
    assert limiter._scripts is not None
    assert isinstance(limiter._scripts.runner, ScriptRunner)
    assert limiter._scripts.runner is limiter._runner
    limiter.close()


async def test_async_limiters_keep_their_own_path(redis_url: str) -> None:
    limiter = AsyncRateLimiter(redis_url)
    assert limiter._scripts is not None
    assert not isinstance(limiter._scripts.runner, ScriptRunner)
    assert limiter._runner is None
    await limiter.aclose()


def test_sentinel_takes_the_direct_path(redis_sentinel: PrivateSentinel, strategy: str) -> None:
    limiter = RateLimiter(redis_sentinel.url, strategy=strategy)  # type: ignore[arg-type]
    assert isinstance(runner(limiter), ScriptRunner)
    assert [limiter.check(plan("3/minute")).allowed for _ in range(5)] == [True] * 3 + [
        False] * 2
    limiter.close()


def test_sentinel_failover_readonly_goes_once_more_to_the_new_master(
        redis_sentinel: PrivateSentinel) -> None:
    s = redis_sentinel
    direct = RateLimiter(s.url)
    normal = redis_py_path(RateLimiter(s.url))
    for limiter, who in ((direct, "a"), (normal, "b")):
        assert [limiter.hit("3/minute", who).allowed for _ in range(2)] == [True, True]
    assert command(s.master_port, "WAIT", 1, 2000) == 1  # the replica has the counters
    old_master = s.master_port
    s.failover(settle=False)
    with redis.Redis(port=s.sentinel_port) as sentinel:  # until the failover has ended
        wait_until(lambda: sentinel.sentinel_master("mymaster")["port"] == s.master_port,
                   30, "SENTINEL MASTER to name the new master")
    # What Sentinel does later: the old master follows the new one, and answers the
    # connections still open to it with READONLY, which redis-py's Sentinel connection
    # raises as a connection error.
    command(old_master, "REPLICAOF", "127.0.0.1", s.master_port)
    quota = direct.hit("3/minute", "a")  # sent again, to the new master
    assert (quota.allowed, quota.remaining) == (True, 0)
    assert not direct.breaker.is_open
    with pytest.raises(StorageError, match="The previous master is now a slave"):
        normal.hit("3/minute", "b")  # redis-py's path: this one check failed
    direct.close()
    normal.close()


def test_cluster_keeps_redis_py_path(redis_cluster: PrivateCluster) -> None:
    limiter = RateLimiter(redis_cluster.url)
    assert limiter._scripts is not None
    assert limiter._runner is None
    assert not isinstance(limiter._scripts.runner, ScriptRunner)
    limiter.close()


def test_clients_the_direct_path_does_not_serve(redis_url: str) -> None:
    plain = redis.Redis.from_url(redis_url)
    single = redis.Redis.from_url(redis_url, single_connection_client=True)
    resp3 = redis.Redis.from_url(redis_url, protocol=3)
    assert fits(plain)
    assert not fits(single)  # one connection, shared under the client's lock
    assert not fits(resp3)  # push messages interleave with replies
    assert not fits(redis.asyncio.Redis.from_url(redis_url))
    for client in (plain, single, resp3):
        client.close()


# --------------------------------------------------------------------------- decisions


def test_decisions_match_the_redis_py_path(redis_client: redis.Redis, redis_url: str,
                                           strategy: str) -> None:
    direct = RateLimiter(redis_url, strategy=strategy)  # type: ignore[arg-type]
    normal = redis_py_path(RateLimiter(redis_url, strategy=strategy))  # type: ignore[arg-type]
    limits = "4/minute;6/hour;9/day"
    seen: list[tuple[Any, ...]] = []
    for step, cost in enumerate([1, 2, 1, 1, 3, 1, 1, 2]):
        pair = []
        for limiter, who in ((direct, "198.51.100.1"), (normal, "198.51.100.2")):
            decision = limiter.check(plan(limits, who, cost))
            pair.append((decision.allowed, [q.remaining for q in decision.quotas],
                         [q.allowed for q in decision.quotas],
                         [round(q.retry_after) for q in decision.quotas]))
        assert pair[0] == pair[1], f"step {step}, cost {cost}"
        seen.append(pair[0])
    assert any(not allowed for allowed, *_ in seen)  # the sequence reached refusals
    direct.close()
    normal.close()


def test_string_arguments_reach_the_script_as_redis_py_sends_them(
        redis_client: redis.Redis) -> None:
    script = redis_client.register_script("return {KEYS[1], ARGV[1], ARGV[2], ARGV[3]}")
    direct = ScriptRunner(redis_client, script)
    call = {"keys": ["k\xe9:{x}"], "args": [7, "lease-\xe9 3f", -12]}
    assert direct(**call) == script(**call)
    assert direct(**call) == [b"k\xc3\xa9:{x}", b"7", b"lease-\xc3\xa9 3f", b"-12"]
    direct.close()


def test_one_evalsha_per_check_on_one_kept_connection(private_redis: PrivateRedis,
                                                      tmp_path: Path) -> None:
    limiter = RateLimiter(private_redis.url)
    limiter.check(plan())  # connects, loads the script
    monitor = Monitor(private_redis.port, tmp_path / "monitor.txt")
    for n in range(5):
        limiter.check(plan(client=f"10.0.0.{n}"))
    lines = monitor.stop()
    assert client_commands(lines) == ["EVALSHA"] * 5
    addresses = {where.rsplit(" ", 1)[1] for where, _, _ in
                 (line.partition("] ") for line in lines) if " lua" not in where}
    assert len(addresses) == 1  # one connection sent them all
    limiter.close()


# --------------------------------------------------------------------------- recovery


def test_noscript_after_script_flush_is_reloaded(private_redis: PrivateRedis,
                                                 tmp_path: Path) -> None:
    limiter = RateLimiter(private_redis.url)
    assert limiter.hit("100/minute", "a").remaining == 99
    with admin(private_redis) as client:
        client.script_flush()  # what a restart does to the script cache
    monitor = Monitor(private_redis.port, tmp_path / "monitor.txt")
    try:
        assert limiter.hit("100/minute", "a").remaining == 98
        assert limiter.hit("100/minute", "a").remaining == 97
    finally:
        commands = client_commands(monitor.stop())
    # Loaded once, on the connection that met NOSCRIPT, and the call sent again.
    assert commands == ["EVALSHA", "SCRIPT", "EVALSHA", "EVALSHA"]
    assert not limiter.breaker.is_open
    limiter.close()


def test_a_killed_connection_is_replaced_once(private_redis: PrivateRedis,
                                              tmp_path: Path) -> None:
    events: list[str] = []
    limiter = RateLimiter(private_redis.url, on_event=lambda event: events.append(event.kind))
    assert limiter.hit("100/minute", "a").remaining == 99
    kept = runner(limiter).kept.get()
    port = kept._sock.getsockname()[1]
    client = admin(private_redis)
    assert client.client_kill(f"127.0.0.1:{port}")
    received = int(client.info("stats")["total_connections_received"])
    monitor = Monitor(private_redis.port, tmp_path / "monitor.txt")
    try:
        assert limiter.hit("100/minute", "a").remaining == 98  # counted once
    finally:
        lines = monitor.stop()
    # The call on the dead socket never reached Redis; the one on the new socket did,
    # after that connection's handshake.
    commands = client_commands(lines)
    assert commands.count("EVALSHA") == 1
    assert commands[-1] == "EVALSHA"
    assert "HELLO" in commands
    # One new connection of ours (and the monitor's).
    assert int(client.info("stats")["total_connections_received"]) == received + 2
    client.close()
    assert runner(limiter).kept.get() is kept  # the same connection object, reconnected
    assert kept._sock.getsockname()[1] != port
    assert events == []
    assert not limiter.breaker.is_open
    limiter.close()


def test_a_server_gone_fails_after_one_new_connection(private_redis: PrivateRedis) -> None:
    limiter = RateLimiter(private_redis.url)
    limiter.hit("100/minute", "a")
    private_redis.kill()
    started = time.monotonic()
    with pytest.raises(StorageError) as failed:
        limiter.hit("100/minute", "a")
    assert time.monotonic() - started < 1
    assert isinstance(failed.value.__cause__, redis.ConnectionError)
    assert "Connection refused" in str(failed.value)  # the new connection's error
    assert limiter.breaker.is_open
    private_redis.start()
    time.sleep(0.6)  # the breaker's first backoff, then its probe reconnects
    assert limiter.hit("100/minute", "a").remaining == 99  # a fresh server
    limiter.close()


# --------------------------------------------------------------------------- processes


def test_a_forked_child_takes_its_own_connection(private_redis: PrivateRedis) -> None:
    limiter = RateLimiter(private_redis.url)
    assert limiter.hit("100/minute", "a").remaining == 99
    kept = runner(limiter).kept.get()
    port = kept._sock.getsockname()[1]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and leave without running any of pytest's code
        status = 1
        try:
            os.close(read)
            remaining = [limiter.hit("100/minute", "a").remaining for _ in range(3)]
            mine = runner(limiter).kept.get()
            report = {"remaining": remaining, "same": mine is kept,
                      "port": mine._sock.getsockname()[1]}
            os.write(write, json.dumps(report).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = json.loads(pipe.read() or "{}")
    assert os.waitpid(pid, 0)[1] == 0
    assert report == {"remaining": [98, 97, 96], "same": False, "port": report["port"]}
    assert report["port"] != port
    # The parent's connection is untouched by the child: still open, on its port.
    assert limiter.hit("100/minute", "a").remaining == 95
    assert runner(limiter).kept.get() is kept
    assert kept._sock.getsockname()[1] == port
    limiter.close()


def test_threads_keep_at_most_half_the_pool(private_redis: PrivateRedis) -> None:
    limiter = RateLimiter(private_redis.url, redis_options=RedisOptions(max_connections=4))
    kept = runner(limiter).kept
    assert kept.most == 2
    start = threading.Barrier(6)
    allowed: list[bool] = []
    most_kept: list[int] = []

    def work() -> None:
        start.wait()
        for _ in range(20):
            allowed.append(limiter.hit("100/minute", "shared").allowed)
            most_kept.append(len(kept._finalizers))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 100  # exact across kept and borrowed connections
    assert max(most_kept) == 2
    assert not kept._finalizers  # the threads ended: their connections went back
    with admin(private_redis) as client:
        assert len(client.client_list()) - 1 <= 4
    limiter.close()


def test_close_gives_the_kept_connections_back(private_redis: PrivateRedis) -> None:
    limiter = RateLimiter(private_redis.url)
    limiter.hit("100/minute", "a")
    kept = runner(limiter).kept
    assert len(kept._finalizers) == 1
    limiter.close()
    assert not kept._finalizers
    with admin(private_redis) as client:
        assert len(client.client_list()) == 1  # only this one
    assert limiter.hit("100/minute", "a").remaining == 98  # usable again, as before
    limiter.close()


# --------------------------------------------------------------------------- failures


def break_server(server: PrivateRedis, how: str) -> None:
    if how == "killed":
        server.kill()
    elif how == "paused":
        server.pause()
    else:  # every counter key turned into a hash: the script fails with WRONGTYPE
        with admin(server) as client:
            for key in client.keys("*"):
                client.delete(key)
                client.hset(key, "x", 1)


@pytest.mark.parametrize("how", ["killed", "paused", "wrong type"])
def test_errors_are_the_ones_redis_py_raises(how: str) -> None:
    errors = []
    for direct in (True, False):
        server = PrivateRedis()
        try:
            limiter = RateLimiter(server.url, redis_options=RedisOptions(socket_timeout=0.2))
            if not direct:
                redis_py_path(limiter)
            limiter.hit("100/minute", "a")  # connected, the key written
            break_server(server, how)
            with pytest.raises(StorageError) as failed:
                limiter.hit("100/minute", "a")
            assert limiter.breaker.is_open  # the failure reached the breaker
            cause = failed.value.__cause__
            errors.append((type(cause), str(failed.value).replace(str(server.port), "PORT")))
            limiter.close()
        finally:
            server.stop()
    assert errors[0] == errors[1]


@pytest.mark.parametrize(("policy", "expected"), [("allow", 200), ("deny", 503),
                                                  ("memory", 200)])
def test_wsgi_policies_when_redis_dies_under_a_kept_connection(
        private_redis: PrivateRedis, policy: str, expected: int) -> None:
    app = flask_app()
    middleware = WSGIRateLimitMiddleware(app.wsgi_app, storage=private_redis.url,
                                         on_storage_error=policy,  # type: ignore[arg-type]
                                         rules=[Rule("/login", "2/minute")])
    app.wsgi_app = middleware  # type: ignore[method-assign]
    assert isinstance(middleware.limiter._scripts.runner, ScriptRunner)  # type: ignore[union-attr]
    with httpx.Client(transport=httpx.WSGITransport(app=app),
                      base_url="http://testserver") as client:
        assert client.post("/login").status_code == 200
        private_redis.kill()
        codes = [client.post("/login").status_code for _ in range(3)]
    assert codes == {"allow": [200] * 3, "deny": [503] * 3,
                     "memory": [200, 200, 429]}[policy]
    assert codes[0] == expected
    middleware.limiter.close()
