"""The single sources of truth stay single: options and their typed keywords, the
strategy registry and everything that reads it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from ratelimit_mw import (
    MiddlewareOptions,
    RateLimiter,
    RateLimitMiddleware,
    Rule,
    WSGIRateLimitMiddleware,
)
from ratelimit_mw._core import Plan, PlanItem, storage_key
from ratelimit_mw._options import MiddlewareKwargs
from ratelimit_mw._rules import parse_limits
from ratelimit_mw._storage.memory import MemoryStore
from ratelimit_mw._strategies import KIND_NUMBERS, SCRIPT, STRATEGIES, strategy_named
from ratelimit_mw.config import Settings, load_settings
from ratelimit_mw.errors import ConfigurationError


def test_middleware_kwargs_are_the_options_fields() -> None:
    fields = [f.name for f in dataclasses.fields(MiddlewareOptions)]
    assert list(MiddlewareKwargs.__annotations__) == fields


@pytest.mark.parametrize("middleware", [RateLimitMiddleware, WSGIRateLimitMiddleware])
def test_constructors_take_the_options_as_keywords(middleware: type) -> None:
    parameters = inspect.signature(middleware).parameters
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for name, p in parameters.items()
               if name != "app")
    with pytest.raises(TypeError, match="colour"):
        middleware(lambda *a: None, colour="blue")


def test_options_fail_at_construction_naming_the_option() -> None:
    for kwargs, word in [({"strategy": "fastest"}, "strategy='fastest'"),
                         ({"headers": "all"}, "headers='all'"),
                         ({"on_storage_error": "retry"}, "on_storage_error='retry'"),
                         ({"on_event": "log"}, "on_event"),
                         ({"exempt_when": "internal"}, "exempt_when='internal'"),
                         ({"enabled": "false"}, "enabled='false'")]:
        with pytest.raises(ConfigurationError, match=word):
            MiddlewareOptions(**kwargs)  # type: ignore[arg-type]


def test_options_round_trip_into_both_middlewares() -> None:
    options = MiddlewareOptions(storage="memory://", default_limits="5/minute",
                                rules=(r for r in [Rule("/login", "1/minute")]))
    assert len(options.rules) == 1  # type: ignore[arg-type]  # a generator is read once
    for middleware in (RateLimitMiddleware, WSGIRateLimitMiddleware):
        built = middleware(lambda *a: None, **options.kwargs())
        assert built.options == options


def test_settings_pass_every_shared_field_to_the_middleware() -> None:
    shared = {f.name for f in dataclasses.fields(Settings)} & {
        f.name for f in dataclasses.fields(MiddlewareOptions)}
    options = load_settings(environ={}).middleware_options()
    assert shared <= set(options)


def test_every_strategy_is_complete_and_named_by_its_key() -> None:
    assert list(STRATEGIES) == [
        "fixed-window", "moving-window", "sliding-window-counter", "gcra"]
    for name, spec in STRATEGIES.items():
        assert spec.name == name
        # Its functions are a block of the one script (`SCRIPT`), filed under its number.
        assert f"KINDS[{KIND_NUMBERS[name]}] = {{read, write, {spec.keys}}}" in SCRIPT
        assert "local function read(" in spec.lua
        assert "local function write(" in spec.lua
        assert spec.redis_keys("p", "k")
        assert strategy_named(name) is spec


def test_an_unknown_strategy_names_the_choices_everywhere() -> None:
    expected = "strategy='fastest': use one of " + ", ".join(STRATEGIES)
    with pytest.raises(ConfigurationError) as limiter:
        RateLimiter("memory://", strategy="fastest")
    with pytest.raises(ConfigurationError) as settings:
        Settings(strategy="fastest")
    with pytest.raises(ConfigurationError) as store:
        MemoryStore("fastest")
    assert str(limiter.value) == str(settings.value) == str(store.value) == expected


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_all_or_nothing_in_memory(strategy: str) -> None:
    # Two limits, the second full: the first is not consumed either.
    store = MemoryStore(strategy)
    items = parse_limits("5/minute;1/hour", "test")
    key = storage_key("r", "client")
    plan = Plan("r", "client", tuple(PlanItem(item, key, 1, f"p{n}")
                                     for n, item in enumerate(items)))
    assert store.quotas(plan)[0].allowed
    refused = store.quotas(plan)
    assert [q.allowed for q in refused] == [True, False]
    assert refused[0].remaining == 4  # the refusal consumed nothing of the first limit
