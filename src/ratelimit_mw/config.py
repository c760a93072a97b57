"""Configuration from a TOML file and the environment, validated at load.

Precedence, highest first: keyword arguments given in code, environment variables
(``RATELIMIT_*``, and ``REDIS_URL`` for the storage), the TOML file (``RATELIMIT_CONFIG``
or the path given), then the defaults. Every error names the field and the bad value.

Example ``ratelimit.toml``::

    storage = "redis://localhost:6379/0"
    strategy = "sliding-window-counter"
    default_limits = "100/minute"
    on_storage_error = "memory"

    [key]
    kind = "client_ip"
    trusted_proxies = ["10.0.0.0/8"]

    [[rules]]
    path = "/login"
    limits = "5/minute"
    methods = ["POST"]

    [[rules]]
    path = "/health"
    exempt = true

    [[global_limits]]
    limits = "5000/minute"
    key = {kind = "shared"}
    name = "global"
"""

from __future__ import annotations

import os
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import keys as key_functions
from ._options import MiddlewareOptions
from ._request import RequestInfo
from ._rules import Limit, Rule, parse_limits
from ._storage.redis import RedisOptions, mask_url, resolve_storage_url
from .errors import ConfigurationError
from .keys import KeyFunc

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ENV_PREFIX", "TIER", "Settings", "Tiers", "load_settings"]

#: The ``limits`` / ``default_limits`` value that means "the limits of the caller's tier".
TIER = "tier"

ENV_PREFIX = "RATELIMIT_"
_KEY_KINDS = ("client_ip", "api_key", "header", "shared")
_RULE_FIELDS = {"path", "limits", "methods", "key", "cost", "exempt", "name", "shadow",
                "penalty", "messages", "strategy", "burst", "align", "tz", "concurrency",
                "concurrency_timeout"}


@dataclass(frozen=True)
class Settings:
    """Everything the middlewares take that can be written down, validated.

    Example::

        settings = load_settings("ratelimit.toml")
        app = RateLimitMiddleware(app, **settings.middleware_options())
        flask_app.wsgi_app = WSGIRateLimitMiddleware(flask_app.wsgi_app,
                                                     **settings.middleware_options())

    One object configures both the ASGI and the WSGI middleware. ``enabled = false``
    (``RATELIMIT_ENABLED=false``) switches both off: requests pass through untouched and
    no storage is built or contacted.
    """

    storage: str | None = None
    strategy: str = "fixed-window"
    default_limits: str | None = None
    headers: str = "both"
    on_storage_error: str = "memory"
    shadow: bool = False
    key: Mapping[str, Any] = field(default_factory=dict)
    rules: tuple[Mapping[str, Any], ...] = ()
    #: ``[tiers]``: limits per plan, chosen by a request header; ``"tier"`` as a
    #: ``limits`` / ``default_limits`` value refers to it.
    tiers: Mapping[str, Any] = field(default_factory=dict)
    #: Limits on every request beside its rule's: rates (counted per client across all
    #: routes), or ``[[global_limits]]`` tables (``limits``, ``key``, ``name``).
    global_limits: str | tuple[Any, ...] | None = None
    socket_timeout: float = 0.25
    socket_connect_timeout: float = 0.25
    max_connections: int = 64
    pool_timeout: float = 1.0
    batch: bool = True
    enabled: bool = True
    local_denials: bool = True

    def __post_init__(self) -> None:
        # TOML spells booleans true/false: say so, in its words.
        for name in ("shadow", "batch", "enabled", "local_denials"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name}={getattr(self, name)!r}: must be true or "
                                         "false")
        if self.storage is not None:
            resolve_storage_url(self.storage)  # raises with the field named
        # Everything else is checked by what the middleware builds from these, built here
        # once, so that every mistake shows at load (and in `ratelimit-mw config`).
        self.redis_options()
        if not isinstance(self.tiers, Mapping):
            raise ConfigurationError(f"tiers={self.tiers!r}: write it as a [tiers] table")
        if self.tiers:
            Tiers(self.tiers)  # checked even when nothing refers to it yet
        MiddlewareOptions(**self.middleware_options()).policy()

    def redis_options(self) -> RedisOptions:
        return RedisOptions(socket_timeout=self.socket_timeout,
                            socket_connect_timeout=self.socket_connect_timeout,
                            max_connections=self.max_connections,
                            pool_timeout=self.pool_timeout, batch=self.batch)

    def key_function(self) -> KeyFunc | None:
        """The ``[key]`` table as a key function (``None``: the socket peer's IP)."""
        if not isinstance(self.key, Mapping):
            # Checked before dict(): key = "client_ip" gets a message naming the table.
            raise ConfigurationError(f"key={self.key!r}: write it as a [key] table, "
                                     "e.g. {kind = \"client_ip\"}")
        return _key_from(dict(self.key), "key") if self.key else None

    def tier_function(self, where: str) -> Tiers:
        """The ``[tiers]`` table as a limits function (for a ``"tier"`` limits value)."""
        if not self.tiers:
            raise ConfigurationError(f"{where}={TIER!r} needs a [tiers] table: header, "
                                     "default and [tiers.limits]")
        return Tiers(self.tiers)

    def rule_objects(self) -> list[Rule]:
        rules = []
        for index, spec in enumerate(self.rules):
            if not isinstance(spec, Mapping):
                # Checked before dict(): rules = ["/login"] or [1] get a message that
                # names the field and the value.
                raise ConfigurationError(f"rules[{index}]={spec!r}: write each rule as a "
                                         "[[rules]] table")
            where = f"rules[{index}]"
            fields_ = dict(spec)
            if fields_.get("limits") == TIER:
                fields_["limits"] = self.tier_function(f"{where}.limits")
            elif "limits" in fields_:
                fields_["limits"] = _limits_from(fields_["limits"], f"{where}.limits")
            rules.append(_rule_from(fields_, where))
        return rules

    def middleware_options(self) -> dict[str, Any]:
        """Keyword arguments for `RateLimitMiddleware` or the WSGI one."""
        options: dict[str, Any] = {
            name: getattr(self, name) for name in _MIDDLEWARE_FIELDS}
        options["rules"] = self.rule_objects()
        options["key"] = self.key_function()
        options["global_limits"] = _limits_from(self.global_limits, "global_limits")
        if self.default_limits == TIER:
            options["default_limits"] = self.tier_function("default_limits")
        if self.storage is None or not self.storage.startswith("memory"):
            options["redis_options"] = self.redis_options()
        return options

    def describe(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets masked (for ``config``)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["storage"] = mask_url(resolve_storage_url(self.storage))
        data["key"] = dict(self.key)
        data["rules"] = [dict(rule) for rule in self.rules]
        data["tiers"] = dict(self.tiers)
        if isinstance(self.global_limits, tuple):
            data["global_limits"] = [dict(limit) if isinstance(limit, Mapping) else limit
                                     for limit in self.global_limits]
        return data


#: Settings passed to the middleware as they are (key, rules and the Redis numbers are
#: built into objects first).
_MIDDLEWARE_FIELDS = tuple(f.name for f in fields(Settings) if f.name in {
    f.name for f in fields(MiddlewareOptions)} - {"key", "rules", "global_limits"})


class Tiers:
    """The ``[tiers]`` table as a limits function: the tier a request header names.

    Example ``ratelimit.toml``::

        default_limits = "tier"

        [tiers]
        header = "X-Plan"       # set by your gateway, never trusted from clients directly
        default = "free"        # when the header is absent or names no tier
        [tiers.limits]
        free = "100/hour"
        pro = "10000/hour"

    Every tier's limits are checked when the file loads.
    """

    __slots__ = ("_default", "_header", "_limits")

    def __init__(self, table: Mapping[str, Any]) -> None:
        unknown = set(table) - {"header", "default", "limits"}
        if unknown:
            raise ConfigurationError(f"tiers: unknown field(s) {sorted(unknown)}; use "
                                     "header, default, limits")
        header, default, limits = table.get("header"), table.get("default"), table.get(
            "limits")
        if not isinstance(header, str) or not header.strip():
            raise ConfigurationError(f"tiers.header={header!r}: name the request header "
                                     "that carries the tier, e.g. \"X-Plan\"")
        if not isinstance(limits, Mapping) or not limits:
            raise ConfigurationError("tiers.limits: write a [tiers.limits] table, e.g. "
                                     "free = \"100/hour\"")
        for name, spec in limits.items():
            if not isinstance(spec, str):
                raise ConfigurationError(f"tiers.limits.{name}={spec!r}: write the limits "
                                         "as a string, e.g. \"100/hour\"")
            parse_limits(spec, f"tiers.limits.{name}")
        if default not in limits:
            raise ConfigurationError(f"tiers.default={default!r}: name one of the tiers "
                                     f"({', '.join(limits)})")
        self._header = header.strip().lower()
        self._limits: dict[str, str] = dict(limits)
        self._default = self._limits[str(default)]

    def __call__(self, request: RequestInfo) -> str:
        return self._limits.get(request.header(self._header) or "", self._default)


def _key_from(spec: dict[str, Any], where: str) -> KeyFunc:
    kind = spec.pop("kind", None)
    if kind not in _KEY_KINDS:
        raise ConfigurationError(f"{where}.kind={kind!r}: use one of {', '.join(_KEY_KINDS)}")
    try:
        factory = getattr(key_functions, kind)
        return factory(**spec)  # type: ignore[no-any-return]
    except ConfigurationError as error:
        # Said where: a bad option of a rule's key named neither the rule nor the table.
        raise ConfigurationError(f"{where}: {error}") from None
    except (TypeError, AttributeError) as error:
        # AttributeError: a wrong type of option, e.g. header's name = 5 (5.lower()).
        raise ConfigurationError(f"{where}: {error} (kind={kind!r}, options "
                                 f"{spec!r})") from None


def _key_field(spec: dict[str, Any], where: str) -> None:
    """Turn a table's ``key`` (an inline table, as ``[key]``) into a key function."""
    if "key" in spec:
        if not isinstance(spec["key"], Mapping):
            raise ConfigurationError(f"{where}.key={spec['key']!r}: write a table like "
                                     "{kind = \"api_key\"}")
        spec["key"] = _key_from(dict(spec["key"]), f"{where}.key")


_LIMIT_FIELDS = ("limits", "key", "name")


def _limits_from(value: Any, where: str) -> Any:
    """A ``limits`` value as written in TOML: rates, or ``{limits, key, name}`` tables
    (alone or in a list beside rates) that become `Limit`s."""
    if isinstance(value, Mapping):
        return _limit_from(dict(value), where)
    if isinstance(value, list | tuple):
        return [_limit_from(dict(part), f"{where}[{index}]") if isinstance(part, Mapping)
                else part for index, part in enumerate(value)]
    return value


def _limit_from(spec: dict[str, Any], where: str) -> Limit:
    unknown = set(spec) - set(_LIMIT_FIELDS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown field(s) {sorted(unknown)}; use "
                                 f"{', '.join(_LIMIT_FIELDS)}")
    if "limits" not in spec:
        raise ConfigurationError(f"{where}: a limit needs its rates, e.g. "
                                 "limits = \"1000/hour\"")
    _key_field(spec, where)
    try:
        return Limit(spec["limits"], key=spec.get("key"), name=spec.get("name"))
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error}") from None


def _rule_from(spec: dict[str, Any], where: str) -> Rule:
    unknown = set(spec) - _RULE_FIELDS
    if unknown:
        raise ConfigurationError(f"{where}: unknown field(s) {sorted(unknown)}; use "
                                 f"{', '.join(sorted(_RULE_FIELDS))}")
    if "path" not in spec:
        raise ConfigurationError(f"{where}: a rule needs a path")
    if not isinstance(spec.get("exempt", False), bool):
        # Rule() takes any truthy value, so exempt = "false" would exempt the route.
        raise ConfigurationError(f"{where}.exempt={spec['exempt']!r}: must be true or false")
    _key_field(spec, where)
    try:
        return Rule(**spec)
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error}") from None


def _env_fields() -> dict[str, type]:
    """``RATELIMIT_<NAME>`` for every scalar setting, with the type to convert it to."""
    hints = typing.get_type_hints(Settings)
    out: dict[str, type] = {}
    for name, hint in hints.items():
        kind = next((t for t in (bool, int, float, str)
                     if hint is t or t in typing.get_args(hint)), None)
        if kind is not None:
            out[name.upper()] = kind
    return out


_ENV_FIELDS = _env_fields()


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if environ.get("REDIS_URL"):
        values["storage"] = environ["REDIS_URL"]
    for suffix, kind in _ENV_FIELDS.items():
        name = ENV_PREFIX + suffix
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        values[suffix.lower()] = _convert(name, raw, kind)
    return values


def _convert(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigurationError(f"{name}={raw!r}: use true or false")
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigurationError(f"{name}={raw!r}: must be {what}") from None


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"config file {str(path)!r}: {error}") from None
    known = {f.name for f in fields(Settings)}
    unknown = set(data) - known
    if unknown:
        raise ConfigurationError(f"config file {str(path)!r}: unknown field(s) "
                                 f"{sorted(unknown)}; use {', '.join(sorted(known))}")
    if "rules" in data:
        if not isinstance(data["rules"], list):
            raise ConfigurationError(f"rules={data['rules']!r}: write them as [[rules]] "
                                     "tables")
        data["rules"] = tuple(data["rules"])
    if isinstance(data.get("global_limits"), list):
        data["global_limits"] = tuple(data["global_limits"])
    return data


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from *path* (else ``$RATELIMIT_CONFIG``), the environment and *overrides*.

    Example::

        settings = load_settings()                       # env + $RATELIMIT_CONFIG
        settings = load_settings("ratelimit.toml", strategy="moving-window")
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    file = path if path is not None else env.get(ENV_PREFIX + "CONFIG")
    if file:
        values.update(_from_file(Path(file)))
    values.update(_from_env(env))
    unknown = set(overrides) - {f.name for f in fields(Settings)}
    if unknown:
        raise ConfigurationError(f"load_settings(): unknown setting(s) {sorted(unknown)}")
    values.update(overrides)
    try:
        return replace(Settings(), **values)
    except TypeError as error:  # a wrong type from TOML, e.g. a table where a string goes
        raise ConfigurationError(f"configuration: {error}") from None
