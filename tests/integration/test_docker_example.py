"""examples/docker/: the compose file, the Dockerfile, and the app they run, without Docker.

Docker cannot run here, so the files are checked for what a build and ``compose up``
rely on: the compose file's structure (health checks, ``depends_on`` on a healthy Redis,
``REDIS_URL`` naming the Redis service, ports, build paths), and the Dockerfile's
references (every COPY source exists in the build context and passes ``.dockerignore``,
the package build has its inputs, the CMD's module imports from the directories the
image puts it in, a non-root user, the port, the health check).

Then the image's app directory is laid out from the Dockerfile's COPY instructions, and
the Dockerfile's CMD serves it on a loopback port with the Dockerfile's and the compose
file's environment; only ``REDIS_URL`` is pointed at the tests' Redis (db 13), or at a
closed port. The Dockerfile's HEALTHCHECK command is run against it as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
import yaml

from ratelimit_mw._storage.limiter import KEY_PREFIX
from ratelimit_mw.config import load_settings
from tests.redis_server import free_port

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "examples" / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
HOST = "127.0.0.1"
#: The URL the health check asks, as written in the Dockerfile and the compose file.
HEALTH_URL = "http://127.0.0.1:8000/health"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


# --- the compose file -------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), data
    return data


def service(name: str) -> dict[str, Any]:
    services = load_compose()["services"]
    assert name in services, f"compose.yaml has no service {name!r}: {sorted(services)}"
    return dict(services[name])


def environment(svc: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment:``, in either of compose's forms, as strings."""
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        pairs = [entry.split("=", 1) for entry in raw]
        raw = {pair[0]: pair[1] if len(pair) == 2 else "" for pair in pairs}
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def published_ports(svc: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(host, container) pairs of a service's ``ports:`` (short or long syntax)."""
    pairs = []
    for entry in svc.get("ports", []):
        if isinstance(entry, dict):
            pairs.append((int(entry["published"]), int(entry["target"])))
            continue
        *host, container = str(entry).split(":")
        pairs.append((int(host[-1]) if host else int(container), int(container.split("/")[0])))
    return pairs


def build_paths() -> tuple[Path, Path]:
    """The app's build context and Dockerfile, resolved as compose resolves them."""
    build = service("app")["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    return context, (context / build.get("dockerfile", "Dockerfile")).resolve()


def test_redis_service_is_healthchecked_with_redis_cli_ping_and_keeps_nothing() -> None:
    redis_service = service("redis")
    assert str(redis_service["image"]).startswith("redis:7")
    check = redis_service["healthcheck"]
    assert check["test"] in (["CMD", "redis-cli", "ping"], ["CMD-SHELL", "redis-cli ping"])
    for option in ("interval", "timeout", "retries"):
        assert option in check, f"redis healthcheck without {option}"
    command = redis_service["command"]
    argv = command if isinstance(command, list) else shlex.split(command)
    assert argv[0] == "redis-server"
    # No RDB snapshots (--save "") and no append-only file: counters need no persistence.
    assert argv[argv.index("--save") + 1] == ""
    assert argv[argv.index("--appendonly") + 1] == "no"
    assert "volumes" not in redis_service
    assert "ports" not in redis_service, "Redis needs no port on the host"


def test_app_waits_for_a_healthy_redis_and_points_redis_url_at_it() -> None:
    app = service("app")
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    env = environment(app)
    url = urlsplit(env["REDIS_URL"])
    assert url.scheme == "redis"
    assert url.hostname == "redis", "inside the network Redis is its service name"
    assert url.hostname in load_compose()["services"]
    assert (url.port or 6379) == 6379
    assert re.fullmatch(r"/\d+", url.path or "/0") or not url.path
    # Every setting the environment gives is one load_settings accepts, as the app loads it.
    settings = load_settings(DOCKER_DIR / "ratelimit.toml", environ=env)
    assert settings.storage == env["REDIS_URL"]
    assert settings.strategy == env["RATELIMIT_STRATEGY"]
    assert int(env.get("WEB_CONCURRENCY", "1")) >= 1


def test_app_ports_healthcheck_and_build_paths() -> None:
    app = service("app")
    assert published_ports(app) == [(8000, 8000)]
    check = app["healthcheck"]
    assert check["test"][0] == "CMD"
    for option in ("interval", "timeout", "retries", "start_period"):
        assert option in check, f"app healthcheck without {option}"
    context, dockerfile = build_paths()
    assert context == ROOT, "the build context must hold the package source"
    assert dockerfile == DOCKERFILE
    assert dockerfile.is_file()


# --- the Dockerfile ---------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"the stage FROM {self.base} has no {keyword}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile: comment lines dropped, continuation lines joined."""
    stages: list[Stage] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # parser directives and comments; Docker drops them inside continuations too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, args))
    assert not pending, "the Dockerfile ends in a continuation"
    return stages


def split_flags(args: str) -> tuple[dict[str, str], list[str]]:
    """``--flag=value`` options and the remaining words (JSON form or whitespace)."""
    flags: dict[str, str] = {}
    words = args.split()
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    rest = " ".join(words)
    return flags, (json.loads(rest) if rest.startswith("[") else rest.split())


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form, not a shell: {args}"
    argv = json.loads(args)
    assert isinstance(argv, list)
    return [str(word) for word in argv]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        words = shlex.split(instruction.args)
        if words and "=" not in words[0]:  # the legacy ENV KEY value form
            env[words[0]] = " ".join(words[1:])
            continue
        env.update(word.split("=", 1) for word in words)
    return env


def workdir_of(stage: Stage) -> PurePosixPath:
    workdir = PurePosixPath("/")
    for instruction in stage.all("WORKDIR"):
        workdir = workdir / instruction.args  # an absolute WORKDIR replaces, a relative one joins
    return workdir


def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def final_stage() -> Stage:
    return stages()[-1]


def copies() -> Iterator[tuple[int, dict[str, str], list[str], str]]:
    """(stage index, flags, sources, destination) of every COPY and ADD."""
    for index, stage in enumerate(stages()):
        for instruction in stage.instructions:
            if instruction.keyword in ("COPY", "ADD"):
                flags, words = split_flags(instruction.args)
                assert len(words) >= 2, f"{instruction.keyword} {instruction.args}"
                yield index, flags, words[:-1], words[-1]


def dockerignore_rules(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, pattern) of the context's .dockerignore, in order (Docker's syntax)."""
    rules = []
    path = context / ".dockerignore"
    for line in path.read_text().splitlines() if path.is_file() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?|\[[^\]]+\])", pattern):
            if part in ("**", "**/"):
                regex += ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            elif part.startswith("["):
                regex += part.replace("[!", "[^", 1)  # a character class, as in Go's Match
            else:
                regex += re.escape(part)
        rules.append((negated, re.compile(regex)))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves *relative* out of the context: the last rule that matches the
    path or one of its parent directories decides."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negated, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_every_copy_source_is_in_the_build_context_and_not_ignored() -> None:
    context, _ = build_paths()
    rules = dockerignore_rules(context)
    stage_names = {stage.name for stage in stages() if stage.name}
    checked = 0
    for _index, flags, sources, _dest in copies():
        if "from" in flags:
            assert flags["from"] in stage_names, f"COPY --from={flags['from']}: no such stage"
            continue
        for source in sources:
            path = context / source
            assert path.exists(), f"COPY {source}: not in the build context {context}"
            found = files_under(path)
            assert found, f"COPY {source}: nothing to copy"
            left_out = [str(p.relative_to(context)) for p in found
                        if ignored(str(p.relative_to(context)), rules)]
            assert not left_out, f".dockerignore leaves out what COPY {source} needs: {left_out}"
            checked += 1
    assert checked >= 3
    for instruction in final_stage().all("RUN"):
        mount = re.search(r"--mount=\S*from=([\w.-]+)", instruction.args)
        if mount:
            assert mount.group(1) in stage_names, f"RUN --mount from {mount.group(1)}"


def test_dockerignore_keeps_the_rest_of_the_repository_out() -> None:
    context, _ = build_paths()
    rules = dockerignore_rules(context)
    assert rules, "a repository-root build context needs a .dockerignore"
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "docs/index.md",
                 "examples/flask_app.py", "src/ratelimit_mw/__pycache__/asgi.cpython-312.pyc",
                 "src/ratelimit_mw/stray.pyc", "benchmarks/run", "examples/docker/compose.yaml"):
        assert ignored(path, rules), f"{path} would be sent to the builder"
    for path in ("pyproject.toml", "src/ratelimit_mw/asgi.py", "examples/docker/app.py"):
        assert not ignored(path, rules), path


def test_the_build_stage_has_what_building_the_package_needs() -> None:
    copied = {source.rstrip("/") for index, flags, sources, _ in copies()
              if index == 0 and "from" not in flags for source in sources}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, hatch = pyproject["project"], pyproject["tool"]["hatch"]
    readme = project.get("readme")
    # What the build backend reads: the metadata, the files it names, the version's
    # source and the packages of the wheel.
    needed = ["pyproject.toml", *([readme] if isinstance(readme, str) else []),
              *project.get("license-files", []),
              *([hatch["version"]["path"]] if "path" in hatch.get("version", {}) else []),
              *hatch["build"]["targets"]["wheel"]["packages"]]
    for path in needed:
        assert any(path == c or path.startswith(c + "/") for c in copied), (
            f"the build stage does not COPY {path}, which building the package needs")
    runs = " ".join(i.args for stage in stages() for i in stage.all("RUN"))
    assert '".[redis]"' in runs, "the package is built with the redis extra"
    assert '"ratelimit-mw[redis]"' in runs, "the image installs it with the redis extra"
    assert all(stage.base.startswith("python:3.12-slim") for stage in stages())


def test_the_image_runs_as_a_non_root_user_on_the_compose_port() -> None:
    stage = final_stage()
    user = stage.last("USER").args.split(":")[0]
    assert user not in ("root", "0"), f"USER {user}"
    exposed = {int(word.split("/")[0]) for i in stage.all("EXPOSE") for word in i.args.split()}
    [(_, container_port)] = published_ports(service("app"))
    assert container_port in exposed
    argv = exec_form(stage.last("CMD").args)
    assert argv[0] == "uvicorn"
    assert argv[argv.index("--host") + 1] == "0.0.0.0", "reachable from outside the container"
    assert int(argv[argv.index("--port") + 1]) == container_port


def healthcheck_argv() -> list[str]:
    args = final_stage().last("HEALTHCHECK").args
    flags, _ = split_flags(args)
    for option in ("interval", "timeout", "retries"):
        assert option in flags, f"HEALTHCHECK without --{option}"
    command = args.split(" CMD ", 1)[1].strip()
    return exec_form(command)


def test_the_healthcheck_is_the_same_in_the_dockerfile_and_compose() -> None:
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"], "slim has no curl: the check is Python's urllib"
    assert argv[2].count(HEALTH_URL) == 1, argv
    assert service("app")["healthcheck"]["test"] == ["CMD", *argv]


# --- the image's app directory, laid out on disk -------------------------------------------


@dataclass
class Image:
    """The final stage's files that the Dockerfile copies, under *root* (the image's /)."""

    root: Path
    env: dict[str, str]  # the stage's ENV, image paths mapped under root
    workdir: Path
    argv: list[str]  # the CMD

    def host_path(self, image_path: str | PurePosixPath) -> Path:
        return self.root / str(image_path).lstrip("/")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    stage = final_stage()
    root = tmp_path_factory.mktemp("image")
    context, _ = build_paths()
    workdir = PurePosixPath("/")
    for instruction in stage.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        flags, words = split_flags(instruction.args)
        if "from" in flags:
            continue
        *sources, dest = words
        target = workdir / dest
        into_dir = dest.endswith("/") or len(sources) > 1
        for source in sources:
            origin = context / source
            if origin.is_dir():
                shutil.copytree(origin, root / str(target).lstrip("/"), dirs_exist_ok=True)
                continue
            destination = root / str(target).lstrip("/")
            if into_dir:
                destination = destination / origin.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)
    built = Image(root, {}, root, exec_form(stage.last("CMD").args))
    built.workdir = built.host_path(workdir)
    for name, value in env_of(stage).items():
        parts = value.split(":")
        if all(part.startswith("/") and built.host_path(part).exists() for part in parts):
            value = ":".join(str(built.host_path(part)) for part in parts)
        built.env[name] = value
    return built


def server_env(image: Image, redis_url: str) -> dict[str, str]:
    """The process environment of the container: ours without anything that configures
    the app or the server, then the Dockerfile's ENV, then compose's environment with
    REDIS_URL replaced."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RATELIMIT_", "UVICORN_", "PYTHON"))
           and k not in ("REDIS_URL", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS")}
    env.update(image.env)
    env.update(environment(service("app")))
    env["REDIS_URL"] = redis_url
    return env


def compose_redis_url_on(test_url: str) -> str:
    """compose's REDIS_URL, its host, port and db replaced by *test_url*'s."""
    compose_url = urlsplit(environment(service("app"))["REDIS_URL"])
    target = urlsplit(test_url)
    return urlunsplit(compose_url._replace(netloc=target.netloc, path=target.path))


def test_the_cmd_module_imports_from_the_image_layout(image: Image) -> None:
    module, _, attribute = image.argv[1].partition(":")
    assert (image.workdir / f"{module}.py").is_file(), "the CMD's module is not in WORKDIR"
    # From another directory, as a worker or `python -c` would: PYTHONPATH must find it.
    env = server_env(image, compose_redis_url_on("redis://127.0.0.1:1/0"))
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}; print(type({module}.{attribute}).__name__,"
                               f" {module}.__file__)"],
        cwd=image.root, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    name, path = result.stdout.split()
    assert name == "RateLimitMiddleware"
    assert Path(path).resolve() == (image.workdir / f"{module}.py").resolve()


# --- the app, served as the image serves it -------------------------------------------------


@dataclass
class Running:
    base: str
    port: int
    log: Path


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)


@contextlib.contextmanager
def serve(image: Image, env: dict[str, str], log_dir: Path) -> Iterator[Running]:
    """The Dockerfile's CMD, on a free loopback port instead of 0.0.0.0:8000."""
    port = free_port()
    argv = [sys.executable, "-m", *image.argv]
    argv[argv.index("--host") + 1] = HOST
    argv[argv.index("--port") + 1] = str(port)
    log = log_dir / f"app-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(argv, cwd=image.workdir, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    running = Running(f"http://{HOST}:{port}", port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{running.base}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer within {START_TIMEOUT:.0f}s:\n"
                            f"{log.read_text()}")
            time.sleep(0.1)
        yield running
    finally:
        _stop(process)


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, asking *port* instead of 8000."""
    argv = healthcheck_argv()
    argv[2] = argv[2].replace(HEALTH_URL, f"http://{HOST}:{port}/health")
    return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                          timeout=15, check=False)


def fresh_post(url: str) -> httpx.Response:
    # A new connection per request, so that the workers share the requests.
    return httpx.post(url, timeout=5)


def stored_keys(client: redis.Redis, prefix: str, part: str) -> list[str]:
    """The keys under *prefix* that contain *part* (a rule or counter name, escaped)."""
    keys = [key.decode() for key in client.scan_iter(match=f"{prefix}*")]
    return [key for key in keys if part in key]


@pytest.mark.redis
def test_the_app_counts_in_the_redis_that_redis_url_names(
    image: Image, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    compose_env = environment(service("app"))
    prefix = f"{KEY_PREFIX}:{compose_env['RATELIMIT_STRATEGY']}:"
    url = compose_redis_url_on(redis_url)
    with serve(image, server_env(image, url), tmp_path) as app:
        health = httpx.get(f"{app.base}/health", timeout=5)
        assert health.status_code == 200
        assert health.json() == {
            "status": "ok", "on_storage_error": compose_env["RATELIMIT_ON_STORAGE_ERROR"],
            "storage": {"url": url, "reachable": True, "circuit": "closed"}}
        assert run_healthcheck(app.port).returncode == 0

        # /health is exempt: past the default limit, no quota headers.
        limit = int(compose_env["RATELIMIT_DEFAULT_LIMITS"].split("/")[0])
        with httpx.Client(base_url=app.base, timeout=5) as client:
            for _ in range(limit + 5):
                response = client.get("/health")
                assert response.status_code == 200
                assert "ratelimit" not in response.headers

        # POST /login: 5 a minute (ratelimit.toml), exact across the uvicorn workers.
        logins = [fresh_post(f"{app.base}/login") for _ in range(6)]
        assert [r.status_code for r in logins] == [200] * 5 + [429], logins[-1].text
        assert [r.headers["x-ratelimit-remaining"] for r in logins[:5]] == ["4", "3", "2",
                                                                           "1", "0"]
        assert logins[0].headers["ratelimit-policy"] == '"/login";q=5;w=60'
        refused = logins[-1]
        assert refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["status"] == 429

        # The counters are in that Redis, under the strategy's key prefix. (Looked at
        # right away: other test runs may FLUSHDB the shared test db.)
        assert stored_keys(redis_client, prefix, "%2Flogin")

        home = httpx.get(f"{app.base}/", timeout=5)
        assert home.status_code == 200
        assert home.headers["ratelimit-policy"] == f'"default";q={limit};w=60'
        assert home.json()["counted_in_fallback"] is False
        assert stored_keys(redis_client, prefix, "default")


def test_the_app_serves_and_stays_healthy_while_redis_is_down(
    image: Image, tmp_path: Path
) -> None:
    url = compose_redis_url_on(f"redis://{HOST}:{free_port()}/0")  # nothing listens there
    with serve(image, server_env(image, url), tmp_path) as app:
        health = httpx.get(f"{app.base}/health", timeout=5)
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["storage"]["reachable"] is False
        assert run_healthcheck(app.port).returncode == 0

        logins = [fresh_post(f"{app.base}/login") for _ in range(6)]
        assert {r.status_code for r in logins} <= {200, 429}, [r.text for r in logins]
        assert logins[0].status_code == 200
        assert logins[0].headers["x-ratelimit-limit"] == "5"  # the fallback's quota
        home = httpx.get(f"{app.base}/", timeout=5)
        assert home.status_code == 200
        assert home.json()["counted_in_fallback"] is True
        stopped_port = app.port
    # The check fails once nothing answers: it is not a check that always passes.
    assert run_healthcheck(stopped_port).returncode != 0
