"""The ``ratelimit-mw`` command, run as the installed console script in a subprocess.

Against the real Redis (db 13), a closed port, a private Redis with a password, a paused
(SIGSTOPped) one and a read-only replica: exit codes, the steps printed, the advice given,
and no password and no traceback in the output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from ratelimit_mw import RateLimiter, WSGIRateLimitMiddleware
from ratelimit_mw.config import load_settings
from tests.redis_server import PrivateRedis, free_port

COMMAND = Path(sys.executable).parent / "ratelimit-mw"
CHECK_STEPS = ("connect", "PING", "server", "JSON set/get/delete", "limiter hit/read/clear")
IDENTITY = "ip:203.0.113.7"


def clean_env(**extra: str) -> dict[str, str]:
    """The real environment without REDIS_URL and RATELIMIT_*, plus *extra*."""
    env = {name: value for name, value in os.environ.items()
           if name != "REDIS_URL" and not name.startswith("RATELIMIT_")}
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(COMMAND), *args], capture_output=True, text=True,
                            env=clean_env() if env is None else env, timeout=timeout,
                            check=False)
    # Every failure becomes a message, never a traceback.
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def plain_app(environ: dict[str, object], start_response: object) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [b"ok"]


def step_line(output: str, title: str) -> str:
    lines = [line for line in output.splitlines() if line.strip().startswith(f"{title} ...")]
    assert len(lines) == 1, output
    return lines[0]


def assert_all_ok(output: str) -> None:
    for title in CHECK_STEPS:
        assert " ... ok" in step_line(output, title), output
    assert output.rstrip().endswith("all checks passed"), output
    assert "FAILED" not in output


def test_console_script_is_installed() -> None:
    assert COMMAND.is_file(), f"{COMMAND} missing: pip install -e . into the venv"
    assert os.access(COMMAND, os.X_OK)


# -- check -------------------------------------------------------------------------------


def test_check_real_redis(redis_url: str, redis_client: redis.Redis) -> None:
    result = run("check", "--redis-url", redis_url)
    assert result.returncode == 0, result.stdout
    assert f"url: {redis_url}" in result.stdout
    assert_all_ok(result.stdout)
    assert "standalone" in step_line(result.stdout, "server")
    assert " ms)" in step_line(result.stdout, "PING")
    # The check cleans up after itself: no scratch key, no counter left in the db.
    assert redis_client.dbsize() == 0


def test_check_reads_redis_url_from_env(redis_url: str, redis_client: redis.Redis) -> None:
    result = run("check", env=clean_env(REDIS_URL=redis_url))
    assert result.returncode == 0, result.stdout
    assert f"url: {redis_url}" in result.stdout
    assert_all_ok(result.stdout)


def test_check_flag_wins_over_env(redis_url: str, redis_client: redis.Redis) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    result = run("check", "--redis-url", redis_url, env=clean_env(REDIS_URL=closed))
    assert result.returncode == 0, result.stdout
    assert closed not in result.stdout


def test_check_closed_port() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run("check", "--redis-url", url)
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert "ok" in step_line(out, "connect")  # the client is built lazily
    assert "FAILED" in step_line(out, "PING")
    assert "Connection refused" in out
    assert "is Redis running?" in out
    assert "service name (redis://redis:6379/0)" in out  # the Docker hint
    assert out.rstrip().endswith("check FAILED")
    assert "all checks passed" not in out
    assert "server ..." not in out  # stops at the first failure


@pytest.fixture
def password_redis() -> Iterator[PrivateRedis]:
    """A private Redis that wants the password ``s3cret``.

    Set with CONFIG SET right after start: PrivateRedis waits for an unauthenticated
    PING to answer PONG, which ``--requirepass`` on the command line would refuse.
    The server behaves the same either way (requirepass is the same setting).
    """
    server = PrivateRedis()
    try:
        client = redis.Redis(port=server.port)
        client.config_set("requirepass", "s3cret")
        client.close()
        yield server
    finally:
        server.stop()


def test_check_password_missing(password_redis: PrivateRedis) -> None:
    result = run("check", "--redis-url", password_redis.url)
    assert result.returncode == 1, result.stdout
    assert "FAILED" in step_line(result.stdout, "PING")
    assert "AuthenticationError" in result.stdout
    assert "Redis wants credentials: put them in the URL" in result.stdout
    assert "redis://:PASSWORD@host:6379/0" in result.stdout


def test_check_password_wrong_is_masked(password_redis: PrivateRedis) -> None:
    result = run("check", "--redis-url", f"redis://:wrong-pw@127.0.0.1:{password_redis.port}/0")
    assert result.returncode == 1, result.stdout
    assert "Redis wants credentials" in result.stdout
    assert "wrong-pw" not in result.stdout + result.stderr
    assert f"url: redis://:***@127.0.0.1:{password_redis.port}/0" in result.stdout


def test_check_password_given(password_redis: PrivateRedis) -> None:
    url = f"redis://:s3cret@127.0.0.1:{password_redis.port}/0"
    result = run("check", "--redis-url", url)
    assert result.returncode == 0, result.stdout
    assert_all_ok(result.stdout)
    assert f"url: redis://:***@127.0.0.1:{password_redis.port}/0" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


def test_check_password_from_env_is_masked(password_redis: PrivateRedis) -> None:
    url = f"redis://:s3cret@127.0.0.1:{password_redis.port}/0"
    result = run("check", env=clean_env(REDIS_URL=url))
    assert result.returncode == 0, result.stdout
    assert "s3cret" not in result.stdout + result.stderr
    assert "redis://:***@" in result.stdout


def test_check_paused_redis_times_out_quickly(private_redis: PrivateRedis) -> None:
    private_redis.pause()  # accepts connections (kernel backlog), answers nothing
    started = time.monotonic()
    result = run("check", "--redis-url", private_redis.url, "--timeout", "0.5", timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout
    assert "FAILED" in step_line(result.stdout, "PING")
    assert "Timeout" in result.stdout
    assert "no answer in time: check the host, the network and firewalls" in result.stdout
    assert "raise --timeout" in result.stdout
    # One 0.5 s socket timeout plus interpreter start-up; redis-py's default of 5 s per
    # try, or retries, would show here.
    assert 0.5 <= elapsed < 4, f"check took {elapsed:.2f}s"


def test_check_read_only_replica() -> None:
    master = PrivateRedis()
    try:
        replica = PrivateRedis("--replicaof", "127.0.0.1", str(master.port),
                               "--replica-read-only", "yes")
        try:
            client = redis.Redis(port=replica.port)
            try:
                deadline = time.monotonic() + 20
                while client.info("replication").get("master_link_status") != "up":
                    assert time.monotonic() < deadline, "the replica did not sync"
                    time.sleep(0.05)
            finally:
                client.close()
            result = run("check", "--redis-url", replica.url)
        finally:
            replica.stop()
    finally:
        master.stop()
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert "ok" in step_line(out, "PING")
    assert "ok" in step_line(out, "server")
    assert "FAILED" in step_line(out, "JSON set/get/delete")
    assert "ReadOnlyError" in out
    assert "this server is a read-only replica: point the URL at the master" in out
    assert "redis+sentinel://" in out


def test_check_no_url() -> None:
    result = run("check")
    assert result.returncode == 2, result.stdout
    assert "no Redis URL: pass --redis-url or set REDIS_URL" in result.stdout


def test_check_empty_redis_url_env_is_no_url() -> None:
    result = run("check", env=clean_env(REDIS_URL=""))
    assert result.returncode == 2, result.stdout
    assert "pass --redis-url or set REDIS_URL" in result.stdout


def test_check_bad_scheme() -> None:
    result = run("check", "--redis-url", "http://:hunter2@127.0.0.1:6379/0")
    assert result.returncode == 2, result.stdout
    assert "unknown scheme 'http'" in result.stdout
    assert "redis://" in result.stdout  # the schemes to use instead
    assert "hunter2" not in result.stdout + result.stderr


def test_check_memory_needs_nothing() -> None:
    result = run("check", "--redis-url", "memory://")
    assert result.returncode == 0, result.stdout
    assert "memory:// needs no connection: nothing to check" in result.stdout


def test_check_bad_timeout() -> None:
    result = run("check", "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--timeout", "0")
    assert result.returncode == 1, result.stdout
    assert "socket_timeout=0.0" in result.stdout
    assert "positive number of seconds" in result.stdout


def test_check_non_numeric_timeout_is_a_usage_error() -> None:
    result = run("check", "--redis-url", "memory://", "--timeout", "soon")
    assert result.returncode == 2
    assert "invalid float value: 'soon'" in result.stderr


# -- --help ------------------------------------------------------------------------------

HELP = {
    (): ("check", "inspect", "reset", "config", "demo"),
    ("check",): ("--redis-url", "--timeout", "REDIS_URL"),
    ("inspect",): ("--rule", "--identity", "--limit", "--storage", "--strategy", "--config"),
    ("reset",): ("--rule", "--identity", "--limit", "--storage", "--strategy", "--config"),
    ("config",): ("--config", "RATELIMIT_CONFIG"),
    ("demo",): ("--host", "--port"),
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: " ".join(c) or "top")
def test_help(command: tuple[str, ...]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: ratelimit-mw {' '.join(command)}".rstrip())
    for option in HELP[command]:
        assert option in result.stdout, (option, result.stdout)


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2
    assert "required: COMMAND" in result.stderr


def test_inspect_requires_rule_and_identity() -> None:
    result = run("inspect", "--rule", "/login")
    assert result.returncode == 2
    assert "--identity" in result.stderr


# -- config ------------------------------------------------------------------------------

CONFIG_TOML = """\
storage = "redis://:pw-secret@127.0.0.1:6379/0"
strategy = "moving-window"
default_limits = "100/minute"

[key]
kind = "client_ip"
trusted_proxies = ["10.0.0.0/8"]

[[rules]]
path = "/login"
limits = "5/minute"
methods = ["POST"]
"""


def test_config_prints_json_with_password_masked(tmp_path: Path) -> None:
    path = tmp_path / "ratelimit.toml"
    path.write_text(CONFIG_TOML)
    result = run("config", "--config", str(path))
    assert result.returncode == 0, result.stdout
    assert "pw-secret" not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["storage"] == "redis://:***@127.0.0.1:6379/0"
    assert data["strategy"] == "moving-window"
    assert data["default_limits"] == "100/minute"
    assert data["key"] == {"kind": "client_ip", "trusted_proxies": ["10.0.0.0/8"]}
    assert data["rules"] == [{"path": "/login", "limits": "5/minute", "methods": ["POST"]}]
    assert data["socket_timeout"] == 0.25
    assert data["max_connections"] == 64


def test_config_from_env_and_file_in_env(tmp_path: Path) -> None:
    path = tmp_path / "ratelimit.toml"
    path.write_text(CONFIG_TOML)
    env = clean_env(RATELIMIT_CONFIG=str(path), RATELIMIT_STRATEGY="fixed-window",
                    RATELIMIT_SHADOW="yes",
                    REDIS_URL="redis://user:env-secret@cache.internal:6380/2")
    result = run("config", env=env)
    assert result.returncode == 0, result.stdout
    data = json.loads(result.stdout)
    assert data["strategy"] == "fixed-window"  # env over file
    assert data["shadow"] is True
    assert data["storage"] == "redis://user:***@cache.internal:6380/2"
    assert data["rules"][0]["path"] == "/login"  # the file named by RATELIMIT_CONFIG
    assert "env-secret" not in result.stdout


def test_config_defaults_without_file() -> None:
    result = run("config")
    assert result.returncode == 0, result.stdout
    data = json.loads(result.stdout)
    assert data["storage"] == "memory://"
    assert data["strategy"] == "fixed-window"
    assert data["rules"] == []


def test_config_errors_are_plain(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = run("config", "--config", str(missing))
    assert result.returncode == 1
    assert result.stdout == f"error: config file {str(missing)!r} does not exist\n"

    bad = tmp_path / "bad.toml"
    bad.write_text('strategy = "fastest"\n')
    result = run("config", "--config", str(bad))
    assert result.returncode == 1
    assert "strategy='fastest'" in result.stdout
    assert "->" not in result.stdout  # a configuration error gets no storage advice


# -- inspect / reset ---------------------------------------------------------------------


def login_config(tmp_path: Path, storage: str, extra: str = "") -> Path:
    path = tmp_path / "ratelimit.toml"
    path.write_text(f'storage = "{storage}"\n{extra}\n'
                    '[[rules]]\npath = "/login"\nlimits = "5/minute"\n')
    return path


def post_login(config: Path, times: int) -> list[int]:
    """The statuses of *times* ``POST /login`` through the WSGI middleware built from
    *config*, as the client 203.0.113.7."""
    middleware = WSGIRateLimitMiddleware(
        plain_app, **load_settings(config, environ={}).middleware_options())
    try:
        transport = httpx.WSGITransport(app=middleware, remote_addr="203.0.113.7")
        with httpx.Client(transport=transport, base_url="http://test") as client:
            return [client.post("/login").status_code for _ in range(times)]
    finally:
        middleware.limiter.close()


def hit_login(url: str, times: int) -> None:
    limiter = RateLimiter(url)
    try:
        for _ in range(times):
            limiter.hit("5/minute", "/login", IDENTITY)
    finally:
        limiter.close()


def test_inspect_and_reset(tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    config = str(login_config(tmp_path, redis_url))
    hit_login(redis_url, 2)
    args = ("--rule", "/login", "--identity", IDENTITY, "--config", config)

    result = run("inspect", *args)
    assert result.returncode == 0, result.stdout
    assert f"/login 5 per 1 minute for {IDENTITY}: 3/5 left, resets in " in result.stdout
    assert "(cleared)" not in result.stdout
    assert redis_client.dbsize() == 1  # inspect reads, it does not count

    result = run("reset", *args)
    assert result.returncode == 0, result.stdout
    assert "5/5 left" in result.stdout
    assert result.stdout.rstrip().endswith("(cleared)")
    assert redis_client.dbsize() == 0

    result = run("inspect", *args)
    assert result.returncode == 0, result.stdout
    assert "5/5 left" in result.stdout
    assert "(cleared)" not in result.stdout


def test_inspect_sees_what_the_middleware_counted(tmp_path: Path, redis_url: str,
                                                  redis_client: redis.Redis) -> None:
    """The counter inspect reads is the one the middleware writes for the same rule."""
    config = login_config(tmp_path, redis_url)

    middleware = WSGIRateLimitMiddleware(
        plain_app, **load_settings(config, environ={}).middleware_options())
    try:
        transport = httpx.WSGITransport(app=middleware, remote_addr="203.0.113.7")
        with httpx.Client(transport=transport, base_url="http://test") as client:
            responses = [client.post("/login") for _ in range(3)]
    finally:
        middleware.limiter.close()
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[-1].headers["x-ratelimit-remaining"] == "2"

    result = run("inspect", "--rule", "/login", "--identity", IDENTITY, "--config",
                 str(config))
    assert result.returncode == 0, result.stdout
    assert "2/5 left" in result.stdout


def test_inspect_and_reset_a_gcra_bucket(tmp_path: Path, redis_url: str,
                                        redis_client: redis.Redis) -> None:
    """GCRA keeps a TAT, not a limits counter: inspect reads it through the strategy's
    script and reset deletes its key, from the configuration's strategy."""
    config = login_config(tmp_path, redis_url, 'strategy = "gcra"')
    assert post_login(config, 3) == [200, 200, 200]
    assert redis_client.keys("*") == [b"rlmw:gcra:rl/{%2Flogin/ip:203.0.113.7}/5/1/minute"]
    args = ("--rule", "/login", "--identity", IDENTITY, "--config", str(config))
    result = run("inspect", *args)
    assert result.returncode == 0, result.stdout
    # 5/minute refills one every 12 s: that is when the next request's room comes back.
    assert "2/5 left, resets in 12s" in result.stdout or "2/5 left, resets in 11s" in (
        result.stdout)
    assert redis_client.dbsize() == 1  # inspect reads, it does not count
    result = run("reset", *args)
    assert result.returncode == 0, result.stdout
    assert "5/5 left, resets in 0s (cleared)" in result.stdout
    assert redis_client.dbsize() == 0
    # Without a file, --strategy says which keys to read.
    limiter = RateLimiter(redis_url, strategy="gcra")
    limiter.hit("5/minute", "/login", IDENTITY, cost=4)
    limiter.close()
    base = ("inspect", "--rule", "/login", "--identity", IDENTITY, "--limit", "5/minute",
            "--storage", redis_url)
    assert "1/5 left" in run(*base, "--strategy", "gcra").stdout
    assert "5/5 left" in run(*base).stdout  # the fixed window's key is another one


@pytest.mark.parametrize(("options", "key", "after_three"), [
    ('strategy = "gcra"\nburst = 4', b"rlmw:gcra:rl/{%2Flogin/ip:203.0.113.7}/5/1/minute",
     "1/5 left"),
    ('align = "calendar"', b"rlmw:calendar:rl/{%2Flogin/ip:203.0.113.7}/5/1/day", "2/5 left"),
])
def test_inspect_and_reset_a_rule_with_a_strategy_of_its_own(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis, options: str,
        key: bytes, after_three: str) -> None:
    """A rule's strategy= / burst= / align= in the file: the middleware counts with it
    under that strategy's keys, and inspect / reset read them from the rule."""
    config = tmp_path / "ratelimit.toml"
    limits = "5/day" if "calendar" in options else "5/minute"
    config.write_text(f'storage = "{redis_url}"\n[[rules]]\npath = "/login"\n'
                      f'limits = "{limits}"\n{options}\n')
    assert post_login(config, 3) == [200, 200, 200]
    assert redis_client.keys("*") == [key]
    args = ("--rule", "/login", "--identity", IDENTITY, "--config", str(config))
    result = run("inspect", *args)
    assert result.returncode == 0, result.stdout
    # A burst of 4 out of 5 per minute: 3 taken leave 1 (out of the bucket of 4).
    assert after_three in result.stdout
    result = run("reset", *args)
    assert result.returncode == 0, result.stdout
    assert "(cleared)" in result.stdout
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(("path", "rule"), [("/login", "/login"), ("/login", "login"),
                                           ("/login/", "/login"), ("//login/", "login")])
def test_inspect_a_named_rule_by_path_or_name(tmp_path: Path, redis_url: str,
                                              redis_client: redis.Redis, path: str,
                                              rule: str) -> None:
    """A named rule counts under its name, and a path is matched normalised (as the
    middleware does): inspect finds the counter by the path or by the name."""
    config = tmp_path / "ratelimit.toml"
    config.write_text(f'storage = "{redis_url}"\n[[rules]]\npath = "{path}"\n'
                      'name = "login"\nlimits = "5/minute"\n')

    middleware = WSGIRateLimitMiddleware(
        plain_app, **load_settings(config, environ={}).middleware_options())
    try:
        transport = httpx.WSGITransport(app=middleware, remote_addr="203.0.113.7")
        with httpx.Client(transport=transport, base_url="http://test") as client:
            for _ in range(3):
                assert client.get("/login").status_code == 200
    finally:
        middleware.limiter.close()
    args = ("--rule", rule, "--identity", IDENTITY, "--config", str(config))
    result = run("inspect", *args)
    assert result.returncode == 0, result.stdout
    assert "2/5 left" in result.stdout
    result = run("reset", *args)
    assert result.returncode == 0, result.stdout
    assert "5/5 left" in result.stdout
    assert redis_client.dbsize() == 0  # the counter the middleware wrote is gone


def test_inspect_with_limit_and_redis_url_from_env(redis_url: str,
                                                   redis_client: redis.Redis) -> None:
    hit_login(redis_url, 4)
    result = run("inspect", "--rule", "/login", "--identity", IDENTITY, "--limit",
                 "5/minute", env=clean_env(REDIS_URL=redis_url))
    assert result.returncode == 0, result.stdout
    assert "1/5 left" in result.stdout


def test_inspect_storage_flag_wins(tmp_path: Path, redis_url: str,
                                   redis_client: redis.Redis) -> None:
    # The file points at a closed port; --storage points at the real Redis.
    config = login_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    hit_login(redis_url, 1)
    result = run("inspect", "--rule", "/login", "--identity", IDENTITY, "--config",
                 str(config), "--storage", redis_url)
    assert result.returncode == 0, result.stdout
    assert "4/5 left" in result.stdout


def test_inspect_unknown_rule_without_limit(tmp_path: Path, redis_url: str,
                                            redis_client: redis.Redis) -> None:
    config = str(login_config(tmp_path, redis_url))
    result = run("inspect", "--rule", "/signup", "--identity", IDENTITY, "--config", config)
    assert result.returncode == 2
    assert result.stdout == ("no limits known for rule '/signup': pass --limit, or a "
                             "--config that has the rule\n")
    result = run("reset", "--rule", "/signup", "--identity", IDENTITY, "--config", config)
    assert result.returncode == 2
    assert "no limits known for rule '/signup'" in result.stdout


def test_inspect_default_rule_with_a_list_of_default_limits(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    # default_limits may be a list in the file (the middleware takes one too).
    config = login_config(tmp_path, redis_url,
                          'default_limits = ["10/second", "100/minute"]')
    result = run("inspect", "--rule", "default", "--identity", IDENTITY, "--config",
                 str(config))
    assert result.returncode == 0, result.stdout
    assert "10/10 left" in result.stdout
    assert "100/100 left" in result.stdout


def test_inspect_closed_storage_gives_advice(tmp_path: Path) -> None:
    config = login_config(tmp_path, f"redis://:pw-secret@127.0.0.1:{free_port()}/0")
    result = run("inspect", "--rule", "/login", "--identity", IDENTITY, "--config",
                 str(config))
    assert result.returncode == 1, result.stdout
    assert result.stdout.startswith("error: StorageError:")
    assert "Connection refused" in result.stdout
    assert "-> nothing is listening there: is Redis running?" in result.stdout
    assert "pw-secret" not in result.stdout + result.stderr


def test_inspect_bad_limit_and_strategy(redis_url: str) -> None:
    base = ("inspect", "--rule", "/login", "--identity", IDENTITY, "--storage", redis_url)
    result = run(*base, "--limit", "lots")
    assert result.returncode == 1
    assert "--limit: 'lots' is not a rate limit" in result.stdout
    result = run(*base, "--limit", "5/minute", "--strategy", "fastest")
    assert result.returncode == 1
    assert "strategy='fastest'" in result.stdout


def test_inspect_rule_inheriting_default_limits_and_exempt_rule(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    config = tmp_path / "ratelimit.toml"
    config.write_text(f'storage = "{redis_url}"\ndefault_limits = "7/minute"\n'
                      '[[rules]]\npath = "/search"\n'
                      '[[rules]]\npath = "/health"\nexempt = true\n')
    limiter = RateLimiter(redis_url)
    try:
        limiter.hit("7/minute", "/search", IDENTITY)  # the rule's own counter
    finally:
        limiter.close()
    result = run("inspect", "--rule", "/search", "--identity", IDENTITY, "--config",
                 str(config))
    assert result.returncode == 0, result.stdout
    assert "6/7 left" in result.stdout
    # An exempt rule counts nothing: there is no quota to show.
    result = run("inspect", "--rule", "/health", "--identity", IDENTITY, "--config",
                 str(config))
    assert result.returncode == 2, result.stdout
    assert "no limits known for rule '/health'" in result.stdout


def test_check_acl_user_without_scripting_is_told_what_to_grant(
        private_redis: PrivateRedis) -> None:
    # An ACL user that may PING and read/write but not run scripts: the check's script
    # step fails with NOPERM, and the advice names the grants the limiter needs.
    with redis.Redis(port=private_redis.port) as admin:
        admin.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["*"],
                          commands=["+ping", "+info", "+@read", "+@write", "+time"])
    result = run("check", "--redis-url",
                 f"redis://limited:pw@127.0.0.1:{private_redis.port}/0")
    assert result.returncode == 1, result.stdout
    assert "FAILED" in result.stdout
    assert "+@scripting" in result.stdout, result.stdout
    assert "Redis wants credentials" not in result.stdout


def test_inspect_and_reset_a_layer_and_the_global_limits(tmp_path: Path, redis_url: str,
                                                         redis_client: redis.Redis) -> None:
    """--layer reads a named Limit's counter, ``global`` the global limits': the counters
    the middleware wrote for a layered request."""
    config = tmp_path / "ratelimit.toml"
    config.write_text(f"""
storage = "{redis_url}"
key = {{ kind = "header", name = "X-User", hashed = false }}

[[rules]]
path = "/search"
limits = ["5/minute", {{ limits = "3/minute", name = "tenant",
                         key = {{ kind = "header", name = "X-Tenant", hashed = false }} }}]

[[global_limits]]
limits = "100/minute"
""".replace("\n                         key", " key"))

    middleware = WSGIRateLimitMiddleware(
        plain_app, **load_settings(config, environ={}).middleware_options())
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=middleware),
                          base_url="http://test") as client:
            codes = [client.get("/search", headers={"X-User": "u1", "X-Tenant": "acme"}
                                ).status_code for _ in range(2)]
    finally:
        middleware.limiter.close()
    assert codes == [200, 200]

    def inspect(*extra: str) -> str:
        result = run("inspect", "--config", str(config), *extra)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "3/5 left" in inspect("--rule", "/search", "--identity", "hdr:x-user:u1")
    assert "1/3 left" in inspect("--rule", "/search", "--layer", "tenant",
                                 "--identity", "hdr:x-tenant:acme")
    assert "98/100 left" in inspect("--rule", "global", "--identity", "hdr:x-user:u1")
    cleared = run("reset", "--config", str(config), "--rule", "/search", "--layer",
                  "tenant", "--identity", "hdr:x-tenant:acme")
    assert "(cleared)" in cleared.stdout
    assert "3/3 left" in cleared.stdout
    missing = run("inspect", "--config", str(config), "--rule", "/search", "--layer",
                  "nope", "--identity", "x")
    assert missing.returncode == 2
    assert "layer 'nope'" in missing.stdout


def test_inspect_shows_and_reset_clears_a_penalty(tmp_path: Path, redis_url: str,
                                                  redis_client: redis.Redis) -> None:
    config = tmp_path / "ratelimit.toml"
    config.write_text(f'storage = "{redis_url}"\n[[rules]]\npath = "/login"\n'
                      'limits = "1/minute"\npenalty = "15 minutes"\n')
    middleware = WSGIRateLimitMiddleware(
        plain_app, **load_settings(config, environ={}).middleware_options())
    try:
        transport = httpx.WSGITransport(app=middleware, remote_addr="203.0.113.7")
        with httpx.Client(transport=transport, base_url="http://test") as client:
            codes = [client.post("/login").status_code for _ in range(2)]
    finally:
        middleware.limiter.close()
    assert codes == [200, 429]
    shown = run("inspect", "--config", str(config), "--rule", "/login", "--identity",
                IDENTITY)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert re.search(r"/login penalty for ip:203\.0\.113\.7: (89\d|900)s left\n",
                     shown.stdout), shown.stdout
    cleared = run("reset", "--config", str(config), "--rule", "/login", "--identity",
                  IDENTITY)
    assert "penalty for ip:203.0.113.7: " in cleared.stdout
    assert cleared.stdout.rstrip().endswith("(cleared)")
    again = run("inspect", "--config", str(config), "--rule", "/login", "--identity",
                IDENTITY)
    assert "penalty" not in again.stdout
