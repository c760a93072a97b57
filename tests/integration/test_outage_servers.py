"""Storage outages under real servers: uvicorn (ASGI) and gunicorn (WSGI, sync workers).

The in-process scenarios of test_outage.py again, this time with several worker
processes, real sockets and steady traffic. Each test starts its own server on a free
127.0.0.1 port in front of a private Redis (never the shared one), drives
``/limited`` at about 20 requests/s from 4 concurrent httpx connections, breaks the Redis
mid-traffic, keeps the traffic up for 3 s, repairs it and keeps the traffic up for 4 s
more. Every request is timed. Then:

* no 5xx at all, except the 503 of ``on_storage_error="deny"``, and no transport errors;
* only the statuses the policy allows, phase by phase: ``memory`` 200/429 throughout
  (and some 429 during the outage: the per-process fallback still limits); ``allow``
  200 throughout; ``deny`` 200 before, 503 during, 200 once the breakers had time to
  probe again (2.5 s after the repair: each process's back-off is at most 2 s then);
* every request answered in under 1 s;
* Redis is used again within 5 s of the repair: keys of the identity sent after the
  repair appear (SCAN on the private Redis). Requests carry their phase in the
  ``X-Client`` key header, so commands a paused Redis executes late, when it resumes,
  cannot pass for new ones.

Parameters, chosen to keep this file near 1.5 min on a 2-core machine:

* killed Redis (SIGKILL, restarted on its port): all three policies, on ASGI
  (``uvicorn --workers 2``) and WSGI (``gunicorn -w 2``, sync): 6 tests. A dead Redis is
  the outage where the policies differ, and refused connections are fast, so what is
  tested is the decision and the recovery;
* paused Redis (SIGSTOP, then SIGCONT): ``memory`` (the default policy) only, on ASGI and
  WSGI: 2 tests. A pause costs socket timeouts rather than refusals; what it tests is
  latency and recovery, which do not depend on the policy (the policies only differ in
  what they answer once the storage has failed, which the kill tests cover);
* the event loop under a paused Redis: ``uvicorn`` with one worker, memory policy.

Each test takes about 10 s (server start, 9 s of traffic, stop): 90 s for the file.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
import redis

from tests.integration.realservers import Sample, p95, serve, server_env
from tests.redis_server import PrivateRedis

RATE = 20.0  # requests/s on /limited, in all
LANES = 4  # concurrent connections driving it
BEFORE, OUTAGE, AFTER = 2.0, 3.0, 4.0  # seconds of traffic around the outage
SETTLE = 2.5  # after the repair, every breaker has probed by then (see the docstring)
MAX_LATENCY = 1.0
RECOVERY = 5.0

#: The limit on /limited per policy: low for memory (429s show the fallback limiting),
#: out of reach for allow and deny (so 429 never hides their statuses).
LIMITS = {"memory": "20/minute", "allow": "100000/minute", "deny": "100000/minute"}
#: Statuses allowed (before the outage, during it, once recovered).
EXPECTED = {
    "memory": ({200, 429}, {200, 429}, {200, 429}),
    "allow": ({200}, {200}, {200}),
    "deny": ({200}, {503}, {200}),
}


async def steady_traffic(client: httpx.AsyncClient, stop: asyncio.Event,
                         label: Callable[[], str], path: str = "/limited",
                         rate: float = RATE, lanes: int = LANES) -> list[Sample]:
    """GET *path* at *rate* requests/s over *lanes* concurrent connections until *stop*;
    each request sends ``X-Client: label()``. A late lane sends at once, then keeps pace."""
    samples: list[Sample] = []
    interval = lanes / rate

    async def lane(offset: float) -> None:
        next_at = time.monotonic() + offset
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop.is_set():
                return
            identity = label()
            sent = time.monotonic()
            try:
                response = await client.get(path, headers={"X-Client": identity})
            except httpx.HTTPError as exc:
                samples.append(Sample(sent, time.monotonic(), None, repr(exc), identity))
            else:
                samples.append(Sample(sent, time.monotonic(), response.status_code,
                                      label=identity,
                                      pid=response.headers.get("x-worker-pid", "")))
            next_at = max(next_at + interval, time.monotonic() - interval)

    await asyncio.gather(*(lane(i * interval / lanes) for i in range(lanes)))
    return samples


def scan(server: PrivateRedis, pattern: str) -> list[bytes]:
    with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=1,
                     socket_connect_timeout=1) as client:
        return list(client.scan_iter(match=pattern))


async def wait_for_keys(server: PrivateRedis, pattern: str, deadline: float) -> float | None:
    """When keys matching *pattern* appeared (monotonic), or ``None`` by *deadline*."""
    while True:
        try:
            if await asyncio.to_thread(scan, server, pattern):
                return time.monotonic()
        except redis.RedisError:
            pass  # not answering yet: keep polling until the deadline
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.1)


def describe(samples: Sequence[Sample]) -> str:
    return (f"{len(samples)} requests, statuses {dict(Counter(s.status for s in samples))}, "
            f"max latency {max((s.latency for s in samples), default=0):.3f}s")


@pytest.mark.parametrize(("kind", "fault", "policy"), [
    ("asgi", "kill", "memory"),
    ("asgi", "kill", "allow"),
    ("asgi", "kill", "deny"),
    ("wsgi", "kill", "memory"),
    ("wsgi", "kill", "allow"),
    ("wsgi", "kill", "deny"),
    ("asgi", "pause", "memory"),
    ("wsgi", "pause", "memory"),
])
async def test_outage_under_real_server(kind: str, fault: str, policy: str,
                                        private_redis: PrivateRedis, tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:10]
    phase = ["before"]
    env = server_env(private_redis.url, LIMITS[policy], policy=policy)
    break_redis = private_redis.kill if fault == "kill" else private_redis.pause
    repair_redis = private_redis.start if fault == "kill" else private_redis.resume
    # No keep-alive: each request is a new connection, which either worker may accept.
    # (Kept-alive connections all ended up on one uvicorn worker.)
    one_shot = httpx.Limits(max_keepalive_connections=0)
    with serve(kind, 2, env, tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base, timeout=5, limits=one_shot) as client:
            stop = asyncio.Event()
            traffic = asyncio.create_task(
                steady_traffic(client, stop, lambda: f"{phase[0]}-{token}"))
            try:
                await asyncio.sleep(BEFORE)
                broken_at = time.monotonic()
                await asyncio.to_thread(break_redis)
                broken = time.monotonic()
                phase[0] = "during"
                await asyncio.sleep(OUTAGE)
                repaired_at = time.monotonic()
                await asyncio.to_thread(repair_redis)
                repaired = time.monotonic()
                phase[0] = "after"
                used_at = await wait_for_keys(private_redis, f"*after-{token}*",
                                              repaired + RECOVERY)
                await asyncio.sleep(max(0.0, repaired + AFTER - time.monotonic()))
            finally:
                stop.set()
                samples = await traffic
        output = server.output()

    context = f"{kind} {fault} {policy}: {describe(samples)}; server output:\n{output}"
    errors = [s for s in samples if s.status is None]
    assert not errors, f"transport errors: {errors[:5]}; {context}"
    server_errors = [s for s in samples if s.status is not None and s.status >= 500
                     and not (policy == "deny" and s.status == 503)]
    assert not server_errors, f"unexpected 5xx: {server_errors[:5]}; {context}"
    slow = [s for s in samples if s.latency >= MAX_LATENCY]
    assert not slow, f"answered in {MAX_LATENCY}s or more: {slow[:5]}; {context}"

    expect_before, expect_during, expect_after = EXPECTED[policy]
    anywhere = expect_before | expect_during | expect_after
    assert {s.status for s in samples} <= anywhere, context
    before = [s for s in samples if s.done < broken_at]
    during = [s for s in samples if s.sent > broken and s.done < repaired_at]
    after = [s for s in samples if s.sent > repaired + SETTLE]
    # Enough traffic in each phase that the checks below mean something.
    assert len(before) >= 0.6 * RATE * BEFORE, f"before: {describe(before)}; {context}"
    assert len(during) >= 0.6 * RATE * OUTAGE, f"during: {describe(during)}; {context}"
    assert len(after) >= 0.6 * RATE * (AFTER - SETTLE), f"after: {describe(after)}; {context}"
    assert {s.status for s in before} <= expect_before, f"before: {describe(before)}"
    assert {s.status for s in during} <= expect_during, f"during: {describe(during)}"
    assert {s.status for s in after} <= expect_after, f"after: {describe(after)}"
    pids = Counter(s.pid for s in samples)
    assert len(pids) == 2, f"both workers should have served: {dict(pids)}; {context}"
    if policy == "memory":
        # The fallback counts in each process: at most 20 of the ~60 requests of the
        # outage pass per worker, so some are refused.
        allowed = Counter(s.pid for s in during if s.status == 200)
        assert max(allowed.values(), default=0) <= 20, (dict(allowed), describe(during))
        assert 429 in {s.status for s in during}, f"during: {describe(during)}"

    repair = "restart" if fault == "kill" else "resume"
    assert used_at is not None, (
        f"Redis not used again within {RECOVERY}s of its {repair}; {context}")
    assert used_at - repaired <= RECOVERY


async def exempt_polls(client: httpx.AsyncClient, seconds: float,
                       every: float = 0.02) -> list[Sample]:
    """GET /exempt every *every* seconds for *seconds*, open loop: each request is sent
    on schedule whatever the previous one is doing, so a stalled server shows up in
    every request sent while it stalls, not just in one."""
    samples: list[Sample] = []

    async def one() -> None:
        sent = time.monotonic()
        try:
            response = await client.get("/exempt")
        except httpx.HTTPError as exc:
            samples.append(Sample(sent, time.monotonic(), None, repr(exc)))
        else:
            samples.append(Sample(sent, time.monotonic(), response.status_code))

    tasks = []
    start = time.monotonic()
    for i in range(round(seconds / every)):
        await asyncio.sleep(max(0.0, start + i * every - time.monotonic()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return samples


async def mixed_load(client: httpx.AsyncClient, seconds: float,
                     ) -> tuple[list[Sample], list[Sample]]:
    """Steady traffic on /limited and open-loop polls of /exempt, together."""
    stop = asyncio.Event()
    limited = asyncio.create_task(steady_traffic(client, stop, lambda: "loop-test"))
    try:
        exempt = await exempt_polls(client, seconds)
    finally:
        stop.set()
        limited_samples = await limited
    return limited_samples, exempt


async def test_event_loop_not_blocked_by_paused_redis(private_redis: PrivateRedis,
                                                     tmp_path: Path) -> None:
    """One uvicorn worker, Redis paused: while limited requests wait on Redis (the
    socket timeout, 0.25 s, then the breaker's probes), the exempt route still answers
    at its normal latency, because nothing blocks the event loop."""
    env = server_env(private_redis.url, "100000/minute", policy="memory")
    with serve("asgi", 1, env, tmp_path) as server:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=server.base, timeout=5, limits=limits) as client:
            await mixed_load(client, 0.5)  # warm up: connections, the script, the app
            base_limited, base_exempt = await mixed_load(client, 2.0)
            await asyncio.to_thread(private_redis.pause)
            try:
                paused_limited, paused_exempt = await mixed_load(client, 4.0)
            finally:
                private_redis.resume()
        output = server.output()

    everything = [*base_limited, *base_exempt, *paused_limited, *paused_exempt]
    assert {s.status for s in everything} == {200}, (
        f"{describe(everything)}; errors {[s.error for s in everything if s.error][:3]}; "
        f"server output:\n{output}")
    baseline = p95([s.latency for s in base_exempt])
    threshold = max(3 * baseline, 0.1)
    paused = p95([s.latency for s in paused_exempt])
    # The scenario happened: some limited requests did wait on the paused Redis.
    waited = [s for s in paused_limited if s.latency >= 0.2]
    assert waited, f"no limited request waited on the paused Redis: {describe(paused_limited)}"
    # Exempt requests sent while a limited request was waiting on Redis.
    overlapping = [e for e in paused_exempt
                   if any(w.sent <= e.sent <= w.done for w in waited)]
    assert len(overlapping) >= 5, (len(overlapping), describe(waited))
    report = (f"exempt p95: baseline {baseline * 1000:.1f} ms, paused {paused * 1000:.1f} ms, "
              f"while a request waited on Redis {p95([e.latency for e in overlapping]) * 1000:.1f}"
              f" ms ({len(overlapping)} requests); threshold {threshold * 1000:.1f} ms")
    assert paused < threshold, report
    assert p95([e.latency for e in overlapping]) < threshold, report
    assert max(s.latency for s in paused_limited) < MAX_LATENCY, describe(paused_limited)
