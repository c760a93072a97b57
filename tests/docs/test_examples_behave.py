"""The docs' examples do what the text around them says.

test_code_blocks.py runs every Python block; here a few pages are run again and the
objects their blocks built are exercised: the 429 after N requests, shared counters,
printed output that a comment shows, the problem body and the log lines as printed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docs.codeblocks import DOCS, ROOT, blocks, run_page
from tests.docs.conftest import write_titled_files

pytestmark = pytest.mark.redis


def _async_limiters(obj: Any, seen: set[int] | None = None) -> list[Any]:
    """The AsyncRateLimiters inside an ASGI app (through .app, .middleware_stack, .limiter)."""
    from ratelimit_mw import AsyncRateLimiter

    seen = set() if seen is None else seen
    if obj is None or id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, AsyncRateLimiter):
        return [obj]
    found = []
    for name in ("limiter", "middleware_stack", "app"):
        found += _async_limiters(getattr(obj, name, None), seen)
    return found


def asgi_requests(app: Any, calls: list[tuple[str, str]]) -> list[httpx.Response]:
    """Send *calls* through *app*, then close its limiters' connections on the same loop
    (they belong to it; left open they would warn when collected)."""

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return [await client.request(method, path) for method, path in calls]
        finally:
            for limiter in _async_limiters(app):
                await limiter.aclose()

    return asyncio.run(go())


def wsgi_requests(app: Any, calls: list[tuple[str, str]]) -> list[httpx.Response]:
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test") as client:
        return [client.request(method, path) for method, path in calls]


def text_block_after(path: Path, snippet: str, lang: str = "text") -> str:
    """The first *lang* block of *path* that follows the block containing *snippet*."""
    found = False
    for block in blocks(path):
        if snippet in block.code:
            found = True
        elif found and block.lang == lang:
            return block.code
    raise AssertionError(f"no {lang} block after {snippet!r} in {path}")


def test_readme_asgi_quick_start_limits_login(page_env: Path, redis_url: str) -> None:
    run = run_page(ROOT / "README.md", redis_url)
    app = run.after('Rule("/health", exempt=True)')["app"]
    responses = asgi_requests(app, [("POST", "/login")] * 6 + [("GET", "/health")])
    assert [r.status_code for r in responses[:6]] == [200] * 5 + [429]
    refused = responses[5]
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-policy"] == '"/login";q=5;w=60'
    assert "ratelimit" not in responses[6].headers  # exempt


def test_readme_flask_quick_start_limits_login(page_env: Path, redis_url: str) -> None:
    run = run_page(ROOT / "README.md", redis_url)
    flask_app = run.after("flask_app = Flask(__name__)")["flask_app"]
    responses = wsgi_requests(flask_app.wsgi_app, [("POST", "/login")] * 6)
    # no /login view: Flask answers 404, but the middleware counts before Flask
    assert [r.status_code for r in responses] == [404] * 5 + [429]
    assert responses[0].headers["x-ratelimit-remaining"] == "4"


def test_readme_limiter_hit(page_env: Path, redis_url: str) -> None:
    run = run_page(ROOT / "README.md", redis_url)
    quota = run.after("limiter.hit(")["quota"]
    assert quota.allowed
    assert quota.remaining == 9


def test_quickstart_starlette_reports_remaining(page_env: Path, redis_url: str) -> None:
    run = run_page(DOCS / "quickstart.md", redis_url)
    app = run.after("from starlette.applications import Starlette")["app"]
    (response,) = asgi_requests(app, [("GET", "/search")])
    assert response.json() == {"remaining": [9, 999]}


def test_cli_identity_example_prints_its_comment(page_env: Path, redis_url: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (block,) = [b for b in blocks(DOCS / "cli.md") if b.runs]
    expected = re.search(r"^# (key:\w+)$", block.code, re.MULTILINE)
    assert expected
    run_page(DOCS / "cli.md", redis_url)
    assert capsys.readouterr().out.strip() == expected.group(1)


def test_headers_problem_body_is_the_real_one(page_env: Path, redis_url: str) -> None:
    from ratelimit_mw import RateLimitMiddleware, Rule
    from tests.docs.codeblocks import tiny_asgi_app

    app = RateLimitMiddleware(tiny_asgi_app, storage="memory://",
                              rules=[Rule("/login", "5/minute", methods=["POST"], name="login")])
    refused = asgi_requests(app, [("POST", "/login")] * 6)[5]
    documented = next(b for b in blocks(DOCS / "headers.md") if b.lang == "json")
    assert refused.status_code == 429
    assert refused.json() == json.loads(documented.code)


def test_failures_log_lines_are_the_real_ones(caplog: pytest.LogCaptureFixture) -> None:
    from ratelimit_mw import CircuitBreaker

    logged = next(b for b in blocks(DOCS / "failures.md")
                  if b.lang == "text" and "ratelimit_mw.breaker" in b.code)
    documented = [line for line in logged.code.splitlines() if line]
    now = [0.0]
    breaker = CircuitBreaker(name="rate limit storage redis://127.0.0.1:6379/0",
                             clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="ratelimit_mw.breaker"):
        breaker.failure(ConnectionError("Connection closed by server."))
        now[0] = 1.0
        assert breaker.allow()
        breaker.success()
    real = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records]
    assert len(real) == 2
    # the first line's error text is a StorageError's in the docs: compare the frame
    assert real[0].split(" failed (")[0] == documented[0].split(" failed (")[0]
    assert real[0].endswith("); skipping it for 0.5s, then probing")
    assert documented[0].endswith("); skipping it for 0.5s, then probing")
    assert real[1] == documented[1]


def test_observability_example_prints_the_documented_counts(
        page_env: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_page(DOCS / "observability.md", redis_url)
    out = capsys.readouterr().out
    documented = text_block_after(DOCS / "observability.md", "asyncio.run(main())")
    for line in documented.splitlines():
        if line.startswith(("ratelimit_requests_total", "ratelimit_storage_")):
            assert line in out, line


def test_slowapi_style_429(page_env: Path, redis_url: str) -> None:
    run = run_page(DOCS / "migrating-slowapi.md", redis_url)
    app = run.after("limited_app=slowapi_style_429")["app"]
    responses = asgi_requests(app, [("POST", "/login")] * 6)
    assert responses[5].status_code == 429
    assert responses[5].json() == {"error": "Rate limit exceeded: 5 per 1 minute"}
    assert "retry-after" in responses[5].headers


def test_slowapi_migrated_fastapi_app(page_env: Path, redis_url: str) -> None:
    run = run_page(DOCS / "migrating-slowapi.md", redis_url)
    app = run.after("app = FastAPI()")["app"]
    responses = asgi_requests(app, [("POST", "/login")] * 6 + [("GET", "/health")])
    assert [r.status_code for r in responses] == [200] * 5 + [429, 200]
    assert responses[0].headers["x-ratelimit-limit"] == "5"
    assert "ratelimit" not in responses[0].headers  # headers="legacy"
    assert "x-ratelimit-limit" not in responses[6].headers  # exempt


def test_flask_limiter_shared_export_counter(page_env: Path, redis_url: str) -> None:
    path = DOCS / "migrating-flask-limiter.md"
    write_titled_files(path, page_env, redis_url)
    run = run_page(path, redis_url)
    app = run.after('Rule("/export.json", "10/hour", name="export")')["app"]
    calls = [("GET", "/export.csv"), ("GET", "/export.json")] * 5 + [("GET", "/export.csv")]
    responses = wsgi_requests(app.wsgi_app, calls)
    assert [r.status_code for r in responses] == [200] * 10 + [429]


def test_flask_limiter_html_429(page_env: Path, redis_url: str) -> None:
    path = DOCS / "migrating-flask-limiter.md"
    write_titled_files(path, page_env, redis_url)
    run = run_page(path, redis_url)
    app = run.after("limited_app=html_429")["app"]
    responses = wsgi_requests(app.wsgi_app, [("POST", "/login")] * 6)
    assert responses[5].status_code == 429
    assert responses[5].headers["content-type"].startswith("text/html")
    assert "<p>/login</p>" in responses[5].text


def test_routes_page_decorated_login_and_rules(page_env: Path, redis_url: str) -> None:
    run = run_page(DOCS / "routes.md", redis_url)
    app = run.after("@limit(\"5/minute\")")["app"]
    responses = asgi_requests(app, [("POST", "/login")] * 6 + [("GET", "/health")])
    assert [r.status_code for r in responses] == [200] * 5 + [429, 200]
    assert responses[0].headers["ratelimit-policy"] == '"/login";q=5;w=60'
    assert "ratelimit-policy" not in responses[6].headers


def test_quickstart_decorated_starlette(page_env: Path, redis_url: str) -> None:
    run = run_page(DOCS / "quickstart.md", redis_url)
    app = run.after("from ratelimit_mw import exempt, limit")["app"]
    responses = asgi_requests(app, [("POST", "/login")] * 6 + [("GET", "/search")])
    assert [r.status_code for r in responses] == [200] * 5 + [429, 200]
    assert responses[6].json() == {"remaining": [9, 999]}


def test_quickstart_flask_extension(page_env: Path, redis_url: str) -> None:
    run = run_page(DOCS / "quickstart.md", redis_url)
    app = run.after("from ratelimit_mw.flask import RateLimit")["app"]
    responses = wsgi_requests(app, [("POST", "/login")] * 6 + [("GET", "/health")])
    assert [r.status_code for r in responses] == [200] * 5 + [429, 200]
    assert [r.json()["remaining"] for r in responses[:5]] == [4, 3, 2, 1, 0]


def test_slowapi_decorated_fastapi_app(page_env: Path, redis_url: str) -> None:
    run = run_page(DOCS / "migrating-slowapi.md", redis_url)
    app = run.after("from ratelimit_mw import exempt, limit")["app"]
    responses = asgi_requests(app, [("POST", "/login")] * 6 + [("GET", "/health")])
    assert [r.status_code for r in responses] == [200] * 5 + [429, 200]
    assert responses[0].headers["x-ratelimit-limit"] == "5"
    assert "x-ratelimit-limit" not in responses[6].headers  # @exempt
