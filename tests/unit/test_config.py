"""Settings from a TOML file, the environment and overrides: every field, the precedence,
every invalid value (a ConfigurationError naming the field and the value), and the
middlewares built from one Settings object.

The environment is always passed explicitly (``environ=``); the real one is never read,
except where a test sets it with monkeypatch to check exactly that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from ratelimit_mw import RateLimitMiddleware, RedisOptions, Rule, WSGIRateLimitMiddleware
from ratelimit_mw._request import RequestInfo
from ratelimit_mw.config import Settings, load_settings
from ratelimit_mw.errors import ConfigurationError
from tests.helpers import WatchedPort

DEFAULTS = {
    "storage": None, "strategy": "fixed-window", "default_limits": None, "headers": "both",
    "on_storage_error": "memory", "shadow": False, "key": {}, "rules": (),
    "socket_timeout": 0.25, "socket_connect_timeout": 0.25, "max_connections": 64,
    "pool_timeout": 1.0, "batch": True, "enabled": True, "tiers": {}, "global_limits": None,
    "local_denials": True,
}


def toml(tmp_path: Path, text: str, name: str = "ratelimit.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def req(client: str = "203.0.113.7", headers: Mapping[str, str] | None = None,
        query: str = "", method: str = "GET", path: str = "/") -> RequestInfo:
    return RequestInfo(method, path, client=client, headers=headers, query=query)


def digest(secret: str) -> str:
    return hashlib.blake2b(secret.encode(), digest_size=16).hexdigest()


def as_dict(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in DEFAULTS}


# -- defaults ----------------------------------------------------------------------------


def test_defaults() -> None:
    assert as_dict(Settings()) == DEFAULTS
    assert as_dict(load_settings(environ={})) == DEFAULTS
    settings = load_settings(environ={})
    assert settings.key_function() is None
    assert settings.rule_objects() == []
    options = settings.redis_options()
    assert (options.socket_timeout, options.socket_connect_timeout, options.max_connections,
            options.pool_timeout) == (0.25, 0.25, 64, 1.0)


def test_explicit_environ_ignores_the_real_one(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://real-env:6379/0")
    monkeypatch.setenv("RATELIMIT_STRATEGY", "moving-window")
    monkeypatch.setenv("RATELIMIT_CONFIG", str(tmp_path / "missing.toml"))
    assert as_dict(load_settings(environ={})) == DEFAULTS
    # Without environ= the process environment is read.
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings()
    monkeypatch.delenv("RATELIMIT_CONFIG")
    settings = load_settings()
    assert settings.storage == "redis://real-env:6379/0"
    assert settings.strategy == "moving-window"


# -- every field from a file -------------------------------------------------------------

FULL_TOML = """\
storage = "redis://:file-secret@cache.internal:6380/3"
strategy = "sliding-window-counter"
default_limits = "100/minute"
headers = "draft"
on_storage_error = "deny"
shadow = true
socket_timeout = 0.5
socket_connect_timeout = 0.75
max_connections = 8
pool_timeout = 2.5

[key]
kind = "client_ip"
trusted_proxies = ["10.0.0.0/8"]
header = "X-Real-IP"
ipv6_prefix = 48

[[rules]]
path = "/login"
limits = "5/minute"
methods = ["POST"]
key = { kind = "api_key", header = "X-Token", query = "token" }
cost = 2
exempt = false
name = "login"
shadow = false

[[rules]]
path = "/search"
limits = ["10/second", "1000/hour"]

[[rules]]
path = "/health"
exempt = true
"""


def test_every_field_from_a_file(tmp_path: Path) -> None:
    settings = load_settings(toml(tmp_path, FULL_TOML), environ={})
    assert settings.storage == "redis://:file-secret@cache.internal:6380/3"
    assert settings.strategy == "sliding-window-counter"
    assert settings.default_limits == "100/minute"
    assert settings.headers == "draft"
    assert settings.on_storage_error == "deny"
    assert settings.shadow is True
    assert settings.socket_timeout == 0.5
    assert settings.socket_connect_timeout == 0.75
    assert settings.max_connections == 8
    assert settings.pool_timeout == 2.5
    assert settings.key == {"kind": "client_ip", "trusted_proxies": ["10.0.0.0/8"],
                            "header": "X-Real-IP", "ipv6_prefix": 48}
    assert isinstance(settings.rules, tuple)
    assert [rule["path"] for rule in settings.rules] == ["/login", "/search", "/health"]

    options = settings.redis_options()
    assert isinstance(options, RedisOptions)
    assert (options.socket_timeout, options.socket_connect_timeout, options.max_connections,
            options.pool_timeout) == (0.5, 0.75, 8, 2.5)

    key = settings.key_function()
    assert key is not None
    # Through the trusted proxy, X-Real-IP is believed; from elsewhere it is not.
    assert key(req("10.1.2.3", {"X-Real-IP": "198.51.100.9"})) == "ip:198.51.100.9"
    assert key(req("192.0.2.1", {"X-Real-IP": "198.51.100.9"})) == "ip:192.0.2.1"
    assert key(req("2001:db8:1:2::5")) == "ip:2001:db8:1::/48"  # ipv6_prefix = 48

    login, search, health = settings.rule_objects()
    assert isinstance(login, Rule)
    assert login.path == "/login"
    assert login.limits == "5/minute"
    assert list(login.methods or ()) == ["POST"]
    assert login.cost == 2
    assert login.exempt is False
    assert login.name == "login"
    assert login.shadow is False
    assert callable(login.key)
    assert login.key(req(headers={"X-Token": "tok-1"})) == "key:" + digest("tok-1")
    assert login.key(req(query="token=tok-1")) == "key:" + digest("tok-1")
    assert login.key(req()) is None  # no key: the middleware's own key= decides
    assert login.compiled.methods == frozenset({"POST"})
    assert login.compiled.name == "login"
    assert [str(item) for item in search.compiled.limits] == ["10 per 1 second",
                                                               "1000 per 1 hour"]
    assert search.cost == 1
    assert search.name is None
    assert search.shadow is None
    assert health.exempt is True
    assert health.limits is None


KEY_TABLES = [
    pytest.param('kind = "client_ip"\ntrusted_hops = 2\nheader = "Forwarded"',
                 req("10.0.0.1", {"Forwarded": "for=198.51.100.1, for=10.9.9.9"}),
                 "ip:198.51.100.1", id="client_ip-hops"),
    pytest.param('kind = "client_ip"', req("203.0.113.9", {"X-Forwarded-For": "1.2.3.4"}),
                 "ip:203.0.113.9", id="client_ip-default"),
    pytest.param('kind = "api_key"', req(headers={"X-API-Key": "s"}), "key:" + digest("s"),
                 id="api_key-default-header"),
    pytest.param('kind = "api_key"\nheader = "Authorization"',
                 req(headers={"Authorization": "abc"}), "key:" + digest("abc"),
                 id="api_key-header"),
    pytest.param('kind = "api_key"\nquery = "k"', req(query="k=q1"), "key:" + digest("q1"),
                 id="api_key-query"),
    pytest.param('kind = "header"\nname = "X-User-Id"\nhashed = false',
                 req(headers={"X-User-Id": "42"}), "hdr:x-user-id:42", id="header-plain"),
    pytest.param('kind = "header"\nname = "X-User-Id"', req(headers={"X-User-Id": "42"}),
                 "hdr:x-user-id:" + digest("42"), id="header-hashed"),
    pytest.param('kind = "shared"', req(), "shared:all", id="shared-default"),
    pytest.param('kind = "shared"\nname = "exports"', req(), "shared:exports",
                 id="shared-named"),
]


@pytest.mark.parametrize(("table", "request_info", "identity"), KEY_TABLES)
def test_key_table_each_kind(tmp_path: Path, table: str, request_info: RequestInfo,
                             identity: str) -> None:
    settings = load_settings(toml(tmp_path, f"[key]\n{table}\n"), environ={})
    key = settings.key_function()
    assert key is not None
    assert key(request_info) == identity
    # The same table as a rule's key.
    inline = ", ".join(line.replace("\n", "") for line in table.split("\n"))
    settings = load_settings(toml(tmp_path, f'[[rules]]\npath = "/a"\nlimits = "1/minute"\n'
                                            f"key = {{ {inline} }}\n", "rule.toml"),
                             environ={})
    rule_key = settings.rule_objects()[0].key
    assert callable(rule_key)
    assert rule_key(request_info) == identity


# -- every field from the environment ----------------------------------------------------

ENV_FIELDS = [
    ("REDIS_URL", "redis://:pw@h:6379/1", "storage", "redis://:pw@h:6379/1"),
    ("RATELIMIT_STORAGE", "memory://", "storage", "memory://"),
    ("RATELIMIT_STRATEGY", "moving-window", "strategy", "moving-window"),
    ("RATELIMIT_DEFAULT_LIMITS", "10/second;1000/hour", "default_limits",
     "10/second;1000/hour"),
    ("RATELIMIT_HEADERS", "legacy", "headers", "legacy"),
    ("RATELIMIT_ON_STORAGE_ERROR", "allow", "on_storage_error", "allow"),
    ("RATELIMIT_SHADOW", "true", "shadow", True),
    ("RATELIMIT_SOCKET_TIMEOUT", "0.1", "socket_timeout", 0.1),
    ("RATELIMIT_SOCKET_CONNECT_TIMEOUT", "2", "socket_connect_timeout", 2.0),
    ("RATELIMIT_MAX_CONNECTIONS", "200", "max_connections", 200),
    ("RATELIMIT_POOL_TIMEOUT", "0.5", "pool_timeout", 0.5),
    ("RATELIMIT_BATCH", "off", "batch", False),
    ("RATELIMIT_ENABLED", "false", "enabled", False),
]


@pytest.mark.parametrize(("name", "raw", "field", "value"), ENV_FIELDS,
                         ids=[row[0] for row in ENV_FIELDS])
def test_each_field_from_env(name: str, raw: str, field: str, value: object) -> None:
    settings = load_settings(environ={name: raw})
    assert getattr(settings, field) == value
    assert type(getattr(settings, field)) is type(value)
    # Only that field changed.
    assert {k: v for k, v in as_dict(settings).items() if k != field} == {
        k: v for k, v in DEFAULTS.items() if k != field}


def test_all_fields_from_env_at_once() -> None:
    environ = {name: raw for name, raw, _, _ in ENV_FIELDS if name != "REDIS_URL"}
    settings = load_settings(environ=environ)
    for name, _, field, value in ENV_FIELDS:
        if name != "REDIS_URL":
            assert getattr(settings, field) == value, name
    options = settings.redis_options()
    assert (options.socket_timeout, options.socket_connect_timeout, options.max_connections,
            options.pool_timeout) == (0.1, 2.0, 200, 0.5)


@pytest.mark.parametrize(("raw", "value"), [
    ("true", True), ("false", False), ("1", True), ("0", False), ("yes", True),
    ("no", False), ("on", True), ("off", False), ("TRUE", True), (" Off ", False),
    ("Yes", True),
])
def test_shadow_from_env(raw: str, value: bool) -> None:
    assert load_settings(environ={"RATELIMIT_SHADOW": raw}).shadow is value


@pytest.mark.parametrize("name", [row[0] for row in ENV_FIELDS])
def test_empty_env_value_is_unset(name: str) -> None:
    assert as_dict(load_settings(environ={name: ""})) == DEFAULTS


def test_numbers_from_env_accept_number_syntax() -> None:
    settings = load_settings(environ={"RATELIMIT_SOCKET_TIMEOUT": "1e-1",
                                      "RATELIMIT_MAX_CONNECTIONS": " 12 "})
    assert settings.socket_timeout == 0.1
    assert settings.max_connections == 12


def test_config_file_from_env(tmp_path: Path) -> None:
    path = toml(tmp_path, 'strategy = "moving-window"\n')
    settings = load_settings(environ={"RATELIMIT_CONFIG": str(path)})
    assert settings.strategy == "moving-window"


@pytest.mark.parametrize("source", ["file", "env"])
def test_every_registered_strategy_loads_and_limits(tmp_path: Path, source: str) -> None:
    # The registry is the only list of strategies: gcra needs no line in config.py.
    path = toml(tmp_path, 'strategy = "gcra"\ndefault_limits = "2/minute"\n')
    environ = {"RATELIMIT_STRATEGY": "gcra", "RATELIMIT_DEFAULT_LIMITS": "2/minute"}
    settings = (load_settings(path, environ={}) if source == "file"
                else load_settings(environ=environ))
    assert settings.strategy == "gcra"

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    middleware = WSGIRateLimitMiddleware(app, storage="memory://",
                                         **{k: v for k, v in settings.middleware_options()
                                            .items() if k != "storage"})
    assert middleware.limiter.strategy_name == "gcra"
    transport = httpx.WSGITransport(app=middleware)
    with httpx.Client(transport=transport, base_url="http://test") as client:
        codes = [client.get("/").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_path_argument_wins_over_config_env(tmp_path: Path) -> None:
    given = toml(tmp_path, 'strategy = "moving-window"\n', "given.toml")
    in_env = toml(tmp_path, 'strategy = "sliding-window-counter"\n', "env.toml")
    settings = load_settings(given, environ={"RATELIMIT_CONFIG": str(in_env)})
    assert settings.strategy == "moving-window"
    # The env's file is not read at all: a broken one does not matter.
    in_env.write_text("this is = = not toml")
    assert load_settings(given, environ={"RATELIMIT_CONFIG": str(in_env)}).strategy == (
        "moving-window")


def test_empty_config_env_reads_no_file() -> None:
    assert as_dict(load_settings(environ={"RATELIMIT_CONFIG": ""})) == DEFAULTS


def test_path_may_be_a_string(tmp_path: Path) -> None:
    path = toml(tmp_path, 'headers = "none"\n')
    assert load_settings(str(path), environ={}).headers == "none"


# -- precedence: overrides > env > file > defaults ---------------------------------------

PRECEDENCE_FILE = """\
storage = "redis://file:6379/0"
strategy = "moving-window"
default_limits = "1/second"
headers = "draft"
on_storage_error = "deny"
shadow = true
socket_timeout = 0.5
socket_connect_timeout = 0.5
max_connections = 5
pool_timeout = 5.0
"""

# env name, raw value, field, the file's value, the env's value, an override
PRECEDENCE = [
    ("RATELIMIT_STORAGE", "redis://env:6379/0", "storage", "redis://file:6379/0",
     "redis://env:6379/0", "memory://"),
    ("RATELIMIT_STRATEGY", "sliding-window-counter", "strategy", "moving-window",
     "sliding-window-counter", "fixed-window"),
    ("RATELIMIT_DEFAULT_LIMITS", "2/second", "default_limits", "1/second", "2/second",
     "3/second"),
    ("RATELIMIT_HEADERS", "legacy", "headers", "draft", "legacy", "none"),
    ("RATELIMIT_ON_STORAGE_ERROR", "allow", "on_storage_error", "deny", "allow", "memory"),
    ("RATELIMIT_SHADOW", "off", "shadow", True, False, True),
    ("RATELIMIT_SOCKET_TIMEOUT", "0.7", "socket_timeout", 0.5, 0.7, 0.9),
    ("RATELIMIT_SOCKET_CONNECT_TIMEOUT", "0.7", "socket_connect_timeout", 0.5, 0.7, 0.9),
    ("RATELIMIT_MAX_CONNECTIONS", "6", "max_connections", 5, 6, 7),
    ("RATELIMIT_POOL_TIMEOUT", "6", "pool_timeout", 5.0, 6.0, 7.0),
]


@pytest.mark.parametrize(("name", "raw", "field", "in_file", "in_env", "override"),
                         PRECEDENCE, ids=[row[2] for row in PRECEDENCE])
def test_precedence(tmp_path: Path, name: str, raw: str, field: str, in_file: object,
                    in_env: object, override: object) -> None:
    path = toml(tmp_path, PRECEDENCE_FILE)
    # Each level differs from the one below it, so each assertion shows who won.
    assert in_file != getattr(Settings(), field)
    assert in_env != in_file
    assert override != in_env
    assert getattr(load_settings(path, environ={}), field) == in_file
    assert getattr(load_settings(path, environ={name: raw}), field) == in_env
    assert getattr(load_settings(path, environ={name: raw}, **{field: override}),
                   field) == override
    assert getattr(load_settings(environ={}, **{field: override}), field) == override


def test_rule_messages_from_toml(tmp_path: Path) -> None:
    settings = load_settings(toml(tmp_path, '[[rules]]\npath = "/ws"\n'
                                            'messages = "5/second;100/minute"\n'),
                             environ={})
    rule = settings.rule_objects()[0]
    assert [(item.amount, item.get_expiry()) for item in rule.compiled.messages] == [
        (5, 1), (100, 60)]
    # A rule of messages alone needs no default_limits: its handshakes are not limited.
    RateLimitMiddleware(lambda scope, receive, send: None, **settings.middleware_options())


def test_rules_and_key_from_overrides_replace_the_files(tmp_path: Path) -> None:
    path = toml(tmp_path, '[key]\nkind = "shared"\n[[rules]]\npath = "/a"\n'
                          'limits = "1/minute"\n')
    settings = load_settings(path, environ={}, rules=({"path": "/b", "limits": "2/minute"},),
                             key={"kind": "header", "name": "X-User"})
    assert [rule.path for rule in settings.rule_objects()] == ["/b"]
    key = settings.key_function()
    assert key is not None
    assert key(req(headers={"X-User": "u"})) == "hdr:x-user:" + digest("u")


def test_redis_url_and_ratelimit_storage(tmp_path: Path) -> None:
    """REDIS_URL is read first and RATELIMIT_STORAGE after it, so the package's own
    variable wins; either beats the file, and an override beats both."""
    path = toml(tmp_path, 'storage = "redis://file:6379/0"\n')
    both = {"REDIS_URL": "redis://generic:6379/0", "RATELIMIT_STORAGE": "redis://own:6379/0"}
    assert load_settings(path, environ=both).storage == "redis://own:6379/0"
    assert load_settings(environ=both).storage == "redis://own:6379/0"
    assert load_settings(path, environ={"REDIS_URL": "redis://generic:6379/0"}).storage == (
        "redis://generic:6379/0")
    assert load_settings(path, environ={"RATELIMIT_STORAGE": "memory://"}).storage == (
        "memory://")
    # An empty RATELIMIT_STORAGE is unset: REDIS_URL then applies.
    assert load_settings(environ={**both, "RATELIMIT_STORAGE": ""}).storage == (
        "redis://generic:6379/0")
    assert load_settings(path, environ=both, storage="memory://").storage == "memory://"


def test_unknown_override() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ={}, stratgy="moving-window")
    assert str(caught.value) == "load_settings(): unknown setting(s) ['stratgy']"


def test_overrides_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="strategy='fastest'"):
        load_settings(environ={}, strategy="fastest")
    with pytest.raises(ConfigurationError, match="max_connections=0"):
        load_settings(environ={}, max_connections=0)


# -- invalid values ----------------------------------------------------------------------

INVALID_TOML = [
    ('strategy = "fastest"', ["strategy='fastest'", "fixed-window, moving-window"]),
    ("strategy = 5", ["strategy=5"]),
    ('headers = "all"', ["headers='all'", "draft, legacy, both, none"]),
    ('on_storage_error = "retry"', ["on_storage_error='retry'", "memory, allow, deny"]),
    ('storage = "http://cache:80/0"', ["storage='http://cache:80/0'",
                                       "unknown scheme 'http'", "redis://"]),
    ('storage = "localhost:6379"', ["storage='localhost:6379'", "unknown scheme ''"]),
    ("storage = 5", ["storage=5", "URL string"]),
    ('default_limits = "lots"', ["default_limits", "'lots' is not a rate limit"]),
    ('default_limits = "0/minute"', ["default_limits", "allows nothing"]),
    ("default_limits = 5", ["default_limits", "got 5"]),
    ('shadow = "yes"', ["shadow='yes'", "true or false"]),
    ("shadow = 1", ["shadow=1", "true or false"]),
    ("socket_timeout = -1", ["socket_timeout=-1", "positive number of seconds"]),
    ("socket_timeout = 0", ["socket_timeout=0", "positive number of seconds"]),
    ('socket_timeout = "fast"', ["socket_timeout='fast'", "positive number"]),
    ("socket_timeout = true", ["socket_timeout=True", "positive number"]),
    ("socket_timeout = nan", ["socket_timeout=nan", "positive number"]),
    ("socket_connect_timeout = -0.5", ["socket_connect_timeout=-0.5"]),
    ("socket_connect_timeout = inf", ["socket_connect_timeout=inf"]),
    ("pool_timeout = 0", ["pool_timeout=0"]),
    ("pool_timeout = -inf", ["pool_timeout=-inf"]),
    ("max_connections = 0", ["max_connections=0", "whole number >= 1"]),
    ("max_connections = -3", ["max_connections=-3", "whole number >= 1"]),
    ("max_connections = 2.5", ["max_connections=2.5", "whole number"]),
    ('max_connections = "10"', ["max_connections='10'", "whole number"]),
    ('colour = "blue"', ["unknown field(s) ['colour']", "strategy"]),
    ('key = "client_ip"', ["key='client_ip'", "[key] table"]),
    ('[key]\nkind = "ip"', ["key.kind='ip'", "client_ip, api_key, header, shared"]),
    ('[key]\nheader = "X-User"', ["key.kind=None", "client_ip"]),
    ('[key]\nkind = "client_ip"\ntrusted_proxy = ["10.0.0.0/8"]',
     ["key:", "trusted_proxy", "kind='client_ip'"]),
    ('[key]\nkind = "client_ip"\ntrusted_proxies = ["nope"]',
     ["key:", "trusted_proxies", "'nope' is not an IP network"]),
    ('[key]\nkind = "client_ip"\ntrusted_proxies = "10.0.0.0/8"',
     ["key:", "trusted_proxies='10.0.0.0/8'"]),
    ('[key]\nkind = "client_ip"\ntrusted_hops = 0', ["key:", "trusted_hops=0"]),
    ('[key]\nkind = "client_ip"\nheader = "X-Origin"', ["key:", "header='X-Origin'"]),
    ('[key]\nkind = "client_ip"\nipv6_prefix = 129', ["key:", "ipv6_prefix=129"]),
    ('[key]\nkind = "api_key"\nheader = ""', ["key:", "api_key()", "header name"]),
    ('[key]\nkind = "api_key"\nfallback = "ip"', ["key:", "fallback='ip'"]),
    ('[key]\nkind = "header"', ["key:", "'name'", "kind='header'"]),
    ('[key]\nkind = "header"\nname = 5', ["key:", "kind='header'", "'name': 5"]),
    ('[key]\nkind = "shared"\nlabel = "x"', ["key:", "label", "kind='shared'"]),
    ('rules = "/login"', ["rules='/login'", "[[rules]]"]),
    ('rules = ["/login"]', ["rules[0]='/login'", "[[rules]] table"]),
    ("rules = [1]", ["rules[0]=1", "[[rules]] table"]),
    ('[[rules]]\npath = "/a"\nlimit = "1/minute"', ["rules[0]", "unknown field(s) ['limit']",
                                                   "limits"]),
    ('[[rules]]\nlimits = "1/minute"', ["rules[0]", "needs a path"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\n[[rules]]\nlimits = "1/minute"',
     ["rules[1]", "needs a path"]),
    ('[[rules]]\npath = "login"\nlimits = "1/minute"', ["rules[0]", "'login'",
                                                        "must start with '/'"]),
    ('[[rules]]\npath = "/a"\nlimits = "often"', ["rules[0]", "'often' is not a rate limit"]),
    ('[[rules]]\npath = "/a"\nlimits = 5', ["rules[0]", "got 5"]),
    ('[[rules]]\npath = "/ws"\nmessages = "often"',
     ["rules[0]", "messages: 'often' is not a rate limit"]),
    ('[[rules]]\npath = "/a"', ["Rule('/a')", "no limits and there are no default_limits"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\nmethods = "POST"',
     ["rules[0]", "methods must be a list", "'POST'"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\nmethods = ["FETCH"]',
     ["rules[0]", "unknown HTTP method(s) ['FETCH']"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\ncost = 0', ["rules[0]", "cost", "got 0"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\ncost = "2"',
     ["rules[0]", "cost", "got '2'"]),
    ('[[rules]]\npath = "/a"\nexempt = "false"', ["rules[0].exempt='false'", "true or false"]),
    ('[[rules]]\npath = "/a"\nexempt = true\nlimits = "1/minute"',
     ["rules[0]", "an exempt rule takes no limits"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\nname = ""',
     ["rules[0]", "name must be a non-empty string"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\nshadow = "yes"', ["rules[0]", "shadow"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\nkey = "api_key"',
     ["rules[0].key='api_key'", "table"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\nkey = { kind = "cookie" }',
     ["rules[0].key.kind='cookie'"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\nkey = { kind = "api_key", head = "X" }',
     ["rules[0].key:", "head", "kind='api_key'"]),
    ('[[rules]]\npath = "/a"\nlimits = "1/minute"\n'
     'key = { kind = "client_ip", trusted_hops = -1 }', ["rules[0].key:", "trusted_hops=-1"]),
    ('[[rules]]\npath = "/a"\nlimits = [{ limits = "1/minute", colour = "red" }]',
     ["rules[0].limits[0]: unknown field(s) ['colour']"]),
    ('[[global_limits]]\nname = "g"', ["global_limits[0]: a limit needs its rates"]),
    ('[[global_limits]]\nlimits = "1/minute"\nkey = "shared"',
     ["global_limits[0].key='shared'", "table"]),
    ('[[global_limits]]\nlimits = "1/minute"\nkey = { kind = "cookie" }',
     ["global_limits[0].key.kind='cookie'"]),
    ('[[global_limits]]\nlimits = "often"', ["global_limits[0]", "'often' is not a rate"]),
    ('global_limits = "often"', ["global_limits: 'often' is not a rate"]),
    ('[[global_limits]]\nlimits = "1/minute"\n[[global_limits]]\nlimits = "9/hour"\n'
     'key = { kind = "shared" }', ["global_limits", "give each a name="]),
]


@pytest.mark.parametrize(("text", "expected"), INVALID_TOML,
                         ids=[row[0].replace("\n", " ")[:60] for row in INVALID_TOML])
def test_invalid_value_in_file(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = toml(tmp_path, text + "\n")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    for part in expected:
        assert part in message, (part, message)


def test_unknown_top_level_field_names_the_file(tmp_path: Path) -> None:
    path = toml(tmp_path, 'colour = "blue"\nsize = 3\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(
        f"config file {str(path)!r}: unknown field(s) ['colour', 'size']; use ")


def test_bad_toml_syntax(tmp_path: Path) -> None:
    path = toml(tmp_path, 'strategy = "fixed-window"\nheaders = \n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"config file {str(path)!r}: ")
    assert "line 2" in message
    assert caught.value.__cause__ is None  # said plainly, not chained to tomllib's


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigurationError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == f"config file {str(path)!r} does not exist"
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(environ={"RATELIMIT_CONFIG": str(path)})


INVALID_ENV = [
    ({"RATELIMIT_STRATEGY": "fastest"}, ["strategy='fastest'"]),
    ({"RATELIMIT_HEADERS": "all"}, ["headers='all'"]),
    ({"RATELIMIT_ON_STORAGE_ERROR": "retry"}, ["on_storage_error='retry'"]),
    ({"RATELIMIT_STORAGE": "http://x:80/0"}, ["storage='http://x:80/0'",
                                              "unknown scheme 'http'"]),
    ({"REDIS_URL": "localhost:6379"}, ["storage='localhost:6379'", "unknown scheme ''"]),
    ({"RATELIMIT_DEFAULT_LIMITS": "lots"}, ["default_limits", "'lots'"]),
    ({"RATELIMIT_SHADOW": "maybe"}, ["RATELIMIT_SHADOW='maybe'", "true or false"]),
    ({"RATELIMIT_SHADOW": "2"}, ["RATELIMIT_SHADOW='2'"]),
    ({"RATELIMIT_SOCKET_TIMEOUT": "fast"}, ["RATELIMIT_SOCKET_TIMEOUT='fast'",
                                            "must be a number"]),
    ({"RATELIMIT_SOCKET_TIMEOUT": "-1"}, ["socket_timeout=-1.0", "positive"]),
    ({"RATELIMIT_SOCKET_TIMEOUT": "0"}, ["socket_timeout=0.0", "positive"]),
    ({"RATELIMIT_SOCKET_TIMEOUT": "nan"}, ["socket_timeout=nan", "positive"]),
    ({"RATELIMIT_SOCKET_CONNECT_TIMEOUT": "0"}, ["socket_connect_timeout=0.0"]),
    ({"RATELIMIT_SOCKET_CONNECT_TIMEOUT": "1s"},
     ["RATELIMIT_SOCKET_CONNECT_TIMEOUT='1s'", "must be a number"]),
    ({"RATELIMIT_POOL_TIMEOUT": "-2.5"}, ["pool_timeout=-2.5"]),
    ({"RATELIMIT_POOL_TIMEOUT": "inf"}, ["pool_timeout=inf"]),
    ({"RATELIMIT_POOL_TIMEOUT": "never"}, ["RATELIMIT_POOL_TIMEOUT='never'"]),
    ({"RATELIMIT_MAX_CONNECTIONS": "0"}, ["max_connections=0", ">= 1"]),
    ({"RATELIMIT_MAX_CONNECTIONS": "-5"}, ["max_connections=-5", ">= 1"]),
    ({"RATELIMIT_MAX_CONNECTIONS": "1.5"}, ["RATELIMIT_MAX_CONNECTIONS='1.5'",
                                            "must be a whole number"]),
    ({"RATELIMIT_MAX_CONNECTIONS": "many"}, ["RATELIMIT_MAX_CONNECTIONS='many'"]),
]


@pytest.mark.parametrize(("environ", "expected"), INVALID_ENV,
                         ids=["{}={}".format(*next(iter(e.items()))) for e, _ in INVALID_ENV])
def test_invalid_value_in_env(environ: dict[str, str], expected: list[str]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ=environ)
    message = str(caught.value)
    for part in expected:
        assert part in message, (part, message)


def test_storage_error_masks_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ={"RATELIMIT_STORAGE": "http://user:hunter2@x:80/0"})
    assert "hunter2" not in str(caught.value)
    assert "user:***@x" in str(caught.value)


@pytest.mark.parametrize(("field", "value"), [
    ("strategy", "fastest"), ("headers", "all"), ("on_storage_error", "retry"),
    ("storage", "ftp://x"), ("default_limits", "lots"), ("shadow", "yes"),
    ("enabled", "false"),
    ("socket_timeout", 0), ("socket_connect_timeout", float("nan")),
    ("max_connections", True), ("pool_timeout", -1), ("key", {"kind": "ip"}),
    ("key", ["client_ip"]), ("rules", ({"path": "/a", "limts": "1/minute"},)),
    ("rules", ("/a",)),
])
def test_settings_constructor_validates(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(**{field: value})  # type: ignore[arg-type]
    assert field in str(caught.value)


# -- middleware_options and describe -----------------------------------------------------

APP_TOML = """\
storage = "memory://"
default_limits = "3/minute"
headers = "both"

[key]
kind = "header"
name = "X-User-Id"
hashed = false

[[rules]]
path = "/login"
limits = "1/minute"
methods = ["POST"]

[[rules]]
path = "/health"
exempt = true
"""


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"asgi"})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]


def test_middleware_options_contents(tmp_path: Path) -> None:
    settings = load_settings(toml(tmp_path, APP_TOML), environ={})
    options = settings.middleware_options()
    assert set(options) == {"storage", "strategy", "default_limits", "headers",
                            "on_storage_error", "rules", "key", "shadow", "enabled",
                            "global_limits", "local_denials"}
    assert options["storage"] == "memory://"
    assert [rule.path for rule in options["rules"]] == ["/login", "/health"]
    assert options["key"](req(headers={"X-User-Id": "u1"})) == "hdr:x-user-id:u1"
    # A Redis storage (or None, which may become $REDIS_URL) also gets the pool options.
    for storage in ("redis://h:6379/0", None):
        redis_options = Settings(storage=storage, socket_timeout=0.3, max_connections=9,
                                 ).middleware_options()["redis_options"]
        assert (redis_options.socket_timeout, redis_options.max_connections) == (0.3, 9)


async def test_middleware_options_build_both_middlewares(tmp_path: Path) -> None:
    settings = load_settings(toml(tmp_path, APP_TOML), environ={})
    asgi = RateLimitMiddleware(asgi_app, **settings.middleware_options())
    wsgi = WSGIRateLimitMiddleware(wsgi_app, **settings.middleware_options())
    assert asgi.limiter is not wsgi.limiter  # each its own memory store

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://test") as client:
        first = await client.post("/login", headers={"X-User-Id": "u1"})
        second = await client.post("/login", headers={"X-User-Id": "u1"})
        other_user = await client.post("/login", headers={"X-User-Id": "u2"})
        health = await client.get("/health")
    assert first.status_code == 200
    assert first.text == "asgi"
    assert first.headers["ratelimit-policy"] == '"/login";q=1;w=60'
    assert first.headers["x-ratelimit-remaining"] == "0"
    assert second.status_code == 429
    assert other_user.status_code == 200  # the [key] table decides the identity
    assert health.status_code == 200
    assert "ratelimit-policy" not in health.headers  # exempt

    with httpx.Client(transport=httpx.WSGITransport(app=wsgi),
                      base_url="http://test") as client:
        first_w = client.post("/login", headers={"X-User-Id": "u1"})
        second_w = client.post("/login", headers={"X-User-Id": "u1"})
        default = client.get("/anything", headers={"X-User-Id": "u1"})
    assert first_w.status_code == 200  # not counted by the ASGI middleware's store
    assert first_w.text == "wsgi"
    assert first_w.headers["ratelimit-policy"] == '"/login";q=1;w=60'
    assert second_w.status_code == 429
    assert default.status_code == 200
    assert default.headers["ratelimit-policy"] == '"default";q=3;w=60'
    assert default.headers["x-ratelimit-remaining"] == "2"


async def test_middleware_options_shadow_and_headers_from_env(tmp_path: Path) -> None:
    settings = load_settings(toml(tmp_path, APP_TOML),
                             environ={"RATELIMIT_SHADOW": "yes", "RATELIMIT_HEADERS": "legacy"})
    asgi = RateLimitMiddleware(asgi_app, **settings.middleware_options())
    wsgi = WSGIRateLimitMiddleware(wsgi_app, **settings.middleware_options())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://test") as client:
        codes = [(await client.post("/login")).status_code for _ in range(3)]
        last = await client.post("/login")
    assert codes == [200, 200, 200]  # shadow: counted, never refused
    assert last.status_code == 200
    assert "ratelimit-policy" not in last.headers  # legacy only
    assert last.headers["x-ratelimit-limit"] == "1"
    with httpx.Client(transport=httpx.WSGITransport(app=wsgi),
                      base_url="http://test") as client:
        codes = [client.post("/login").status_code for _ in range(3)]
    assert codes == [200, 200, 200]


@pytest.mark.parametrize("source", ["file", "env"])
async def test_enabled_false_passes_through_and_never_builds_a_storage(
        tmp_path: Path, source: str) -> None:
    port = WatchedPort()
    if source == "file":
        settings = load_settings(toml(tmp_path, f'storage = "{port.url}"\nenabled = false\n'
                                      'default_limits = "1/minute"\n'), environ={})
    else:
        settings = load_settings(environ={"REDIS_URL": port.url, "RATELIMIT_ENABLED": "false",
                                          "RATELIMIT_DEFAULT_LIMITS": "1/minute"})
    assert settings.enabled is False
    asgi = RateLimitMiddleware(asgi_app, **settings.middleware_options())
    wsgi = WSGIRateLimitMiddleware(wsgi_app, **settings.middleware_options())
    assert asgi.limiter is None
    assert wsgi.limiter is None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://test") as client:
        asgi_responses = [await client.get("/") for _ in range(3)]
    with httpx.Client(transport=httpx.WSGITransport(app=wsgi),
                      base_url="http://test") as client:
        wsgi_responses = [client.get("/") for _ in range(3)]
    for response in (*asgi_responses, *wsgi_responses):
        assert response.status_code == 200
        assert not [name for name in response.headers if "ratelimit" in name]
    assert port.connections() == 0
    port.close()


def test_describe_masks_the_password(tmp_path: Path) -> None:
    settings = load_settings(toml(tmp_path, FULL_TOML), environ={})
    data = settings.describe()
    assert data["storage"] == "redis://:***@cache.internal:6380/3"
    text = json.dumps(data)  # plain data: serialisable as it is
    assert "file-secret" not in text
    assert set(data) == set(DEFAULTS)
    assert data["strategy"] == "sliding-window-counter"
    assert data["key"]["kind"] == "client_ip"
    assert data["rules"][0]["key"] == {"kind": "api_key", "header": "X-Token",
                                       "query": "token"}
    assert data["max_connections"] == 8
    # A copy: changing it does not change the settings.
    data["key"]["kind"] = "shared"
    data["rules"].clear()
    assert settings.key["kind"] == "client_ip"
    assert len(settings.rules) == 3


def test_describe_masks_user_and_password() -> None:
    data = Settings(storage="rediss://admin:p%40ss@h:6380/0").describe()
    assert data["storage"] == "rediss://admin:***@h:6380/0"
    assert Settings(storage="redis://h:6379/0").describe()["storage"] == "redis://h:6379/0"


def test_describe_without_storage_shows_what_the_middleware_would_use(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # storage None means $REDIS_URL (of the process) at construction, else memory://.
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert Settings().describe()["storage"] == "memory://"
    monkeypatch.setenv("REDIS_URL", "redis://:envpw@h:6379/0")
    assert Settings().describe()["storage"] == "redis://:***@h:6379/0"


# -- layered and global limits -------------------------------------------------------------


LAYERED_TOML = """
key = { kind = "header", name = "X-User" }

[[rules]]
path = "/search"

[[rules.limits]]
limits = "10/second"

[[rules.limits]]
limits = "1000/hour"
name = "tenant"
key = { kind = "header", name = "X-Tenant" }

[[global_limits]]
limits = "5000/minute"
key = { kind = "shared" }
name = "everyone"
"""


def test_layered_and_global_limits_from_a_file(tmp_path: Path) -> None:
    settings = load_settings(toml(tmp_path, LAYERED_TOML), environ={})
    options = settings.middleware_options()
    policy = RateLimitMiddleware(lambda *a: None, **options).policy
    plan = policy.plan(req(path="/search", headers={"x-user": "u1", "x-tenant": "acme"}))
    assert plan is not None
    assert [(i.policy, i.limit.amount) for i in plan.items] == [
        ("/search", 10), ("tenant", 1000), ("everyone", 5000)]
    other = policy.plan(req(path="/other", headers={"x-user": "u2", "x-tenant": "acme"}))
    assert other is not None
    assert other.items[-1].key == plan.items[-1].key
    assert settings.describe()["global_limits"] == [
        {"limits": "5000/minute", "key": {"kind": "shared"}, "name": "everyone"}]


def test_rates_and_limit_tables_mix_in_one_list(tmp_path: Path) -> None:
    text = ('[[rules]]\npath = "/x"\nlimits = ["10/second", { limits = "9/hour", '
            'name = "t", key = { kind = "shared" } }]\n')
    rule = load_settings(toml(tmp_path, text), environ={}).rule_objects()[0]
    assert [(layer.name, [i.amount for i in layer.items]) for layer in
            rule.compiled.layers] == [(None, [10]), ("t", [9])]


def test_global_limits_from_the_environment() -> None:
    settings = load_settings(environ={"RATELIMIT_GLOBAL_LIMITS": "1000/hour"})
    assert settings.global_limits == "1000/hour"
    policy = WSGIRateLimitMiddleware(lambda *a: [], **settings.middleware_options()).policy
    plan = policy.plan(req(path="/anything"))
    assert plan is not None
    assert [i.policy for i in plan.items] == ["global"]
    policy.plan(req())  # every route, one counter per client
