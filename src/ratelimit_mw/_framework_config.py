"""Middleware options from a framework's configuration: Django's ``settings.RATELIMIT``
and Flask's ``app.config["RATELIMIT_*"]``, read with the configuration file's keys.

The keys are `Settings`' (the TOML file's); what code can hold and a file cannot passes
through as it is: `Rule` objects among ``rules``, a key function as ``key``, and the
middleware's callable options (``on_event``, ``exempt_when``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ._options import _LIMITER_OPTIONS, MiddlewareOptions
from ._rules import Rule
from .config import _ENV_FIELDS, Settings, _convert, load_settings
from .errors import ConfigurationError

__all__ = ["options_from"]

_SETTINGS = {f.name for f in fields(Settings)}
#: Options only code can give (callables, objects); passed to the middleware as they are.
_CODE_ONLY = {f.name for f in fields(MiddlewareOptions)} - _SETTINGS - {"rules"}


def options_from(data: Mapping[str, Any], where: str, name_of: Any = str) -> MiddlewareOptions:
    """`MiddlewareOptions` from *data* (configuration keys); errors name *where* and each
    key as *name_of* spells it (``RATELIMIT_DEFAULT_LIMITS`` for Flask)."""
    settings_values: dict[str, Any] = {}
    code: dict[str, Any] = {}
    rules: list[Rule] = []
    file = None
    for key, value in data.items():
        if key == "config":  # a TOML file under what the framework holds
            file = value
            continue
        kind = _ENV_FIELDS.get(key.upper())
        if isinstance(value, str) and kind is not None and kind is not str:
            # Written as text (an environment variable copied into the config): read
            # as the environment's value would be.
            try:
                value = _convert(name_of(key), value, kind)
            except ConfigurationError as error:
                raise ConfigurationError(f"{where}: {error}") from None
        if key == "rules" and not isinstance(value, str | Mapping):
            given = list(value) if isinstance(value, list | tuple) else value
            if isinstance(given, list):
                rules = [r for r in given if isinstance(r, Rule)]
                value = tuple(r for r in given if not isinstance(r, Rule))
        if (key == "key" and callable(value)) or key in _CODE_ONLY:
            code[key] = value
        elif key in _SETTINGS:
            settings_values[key] = value
        else:
            known = sorted(name_of(k) for k in _SETTINGS | _CODE_ONLY | {"config"})
            raise ConfigurationError(f"{where}: unknown key {name_of(key)!r}; use "
                                     f"{', '.join(known)}")
    try:
        # The process environment is the framework's to read (settings.py, Flask's
        # from_prefixed_env): what the framework holds is the whole configuration.
        settings = load_settings(file, environ={}, **settings_values)
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error}") from None
    kwargs = settings.middleware_options()
    kwargs["rules"] = [*kwargs["rules"], *rules]
    kwargs.update(code)
    if "limiter" in code:
        # A limiter brings its storage: the file's defaults for those must not clash.
        for name in _LIMITER_OPTIONS:
            if name not in data:
                kwargs.pop(name, None)
    try:
        return MiddlewareOptions(**kwargs)
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error}") from None
