"""The distributions: the wheel and the sdist build from this tree, pass
``twine check --strict``, carry the right files and metadata, and the wheel works when it
is installed alone (no extras, no source tree) in a fresh venv.

The build runs without isolation (hatchling comes with the ``test`` extra), so it needs no
package index; installing the wheel in the fresh venv does: pip fetches ``limits`` and its
dependencies (or takes them from its cache). If it cannot, the tests fail, loudly.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import ratelimit_mw

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "ratelimit_mw"
PROBE = Path(__file__).with_name("probe.py")

EXTRAS = {  # extra -> a requirement it must bring
    "redis": "redis",
    "prometheus": "prometheus-client",
    "docs": "mkdocs",
    "test": "pytest",
}
PROJECT_URLS = {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

# Public classes of the modules that ratelimit_mw/__init__.py imports from which are,
# on purpose, not exported from the package itself. Each needs a reason.
NOT_EXPORTED = {
    # The compiled forms of Rule and the rule list: built by the middlewares, not by users.
    "ratelimit_mw._rules.CompiledRule",
    "ratelimit_mw._rules.RuleTable",
    # The typed keywords of the middlewares: MiddlewareOptions is the exported form.
    "ratelimit_mw._options.MiddlewareKwargs",
    # A rule's count_when / response_cost and penalty as its plans carry them: built
    # by Rule and Policy.
    "ratelimit_mw._response.Settle",
    "ratelimit_mw._core.Penalty",
    # Route discovery's own types: what an adapter reads from a router, the loader the
    # middlewares call, and the matcher protocol of a compiled rule; users write @limit.
    "ratelimit_mw._routes.Part",
    "ratelimit_mw._routes.Route",
    "ratelimit_mw._routes.Routes",
    "ratelimit_mw._routes.RouteLoader",
    "ratelimit_mw._rules.PathMatcher",
}


@dataclass(frozen=True)
class Dists:
    wheel: Path
    sdist: Path


def run(*args: str | Path, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True,
                          timeout=timeout, check=False, **kwargs)


def succeeded(result: subprocess.CompletedProcess[str]) -> bool:
    """True on exit 0; else prints the command's output (shown by pytest on failure)."""
    if result.returncode != 0:
        print(f"$ {' '.join(result.args)}\n-> exit {result.returncode}\n"
              f"{result.stdout}\n{result.stderr}")
    return result.returncode == 0


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """An sdist of this tree, and a wheel built from that sdist (python -m build)."""
    out = tmp_path_factory.mktemp("dist")
    result = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    if not succeeded(result):
        pytest.fail(f"python -m build failed:\n{result.stdout[-3000:]}\n{result.stderr}")
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1, wheels
    assert len(sdists) == 1, sdists
    return Dists(wheels[0], sdists[0])


@pytest.fixture(scope="module")
def wheel_files(dists: Dists) -> dict[str, bytes]:
    with zipfile.ZipFile(dists.wheel) as wheel:
        return {name: wheel.read(name) for name in wheel.namelist()}


@pytest.fixture(scope="module")
def metadata(wheel_files: dict[str, bytes]) -> Message:
    text = wheel_files[f"{dist_info()}/METADATA"].decode()
    return Parser().parsestr(text)


def dist_info() -> str:
    return f"ratelimit_mw-{ratelimit_mw.__version__}.dist-info"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would leak the dev venv or a configuration in."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "REDIS_URL"}
           and not k.startswith("RATELIMIT_")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", **extra}


@pytest.fixture(scope="module")
def fresh_venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel installed (and its required dependencies, no extras).

    Made without pip of its own (fast); this venv's pip installs into it (``--python``).
    """
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert succeeded(made)
    python = venv / "bin" / "python"
    installed = run(sys.executable, "-m", "pip", "--python", python, "install",
                    "--timeout", "30", "--retries", "2", dists.wheel, timeout=240,
                    env=clean_env(), cwd=venv)
    if not succeeded(installed):
        pytest.fail("could not install the wheel in a fresh venv (is the package index "
                    f"reachable?):\n{installed.stdout[-3000:]}\n{installed.stderr[-3000:]}")
    return venv


def probe(venv: Path, section: str, request: object = None) -> Any:
    """Run probe.py's *section* with the fresh venv's python, isolated from this tree."""
    result = run(venv / "bin" / "python", "-I", PROBE, section, cwd=venv,
                 input=json.dumps(request or {}), env=clean_env())
    assert succeeded(result), result.stderr
    return json.loads(result.stdout)


def documented_names() -> list[str]:
    """Dotted names the documentation imports or renders: ``from ratelimit_mw... import``
    in code blocks, and mkdocstrings' ``::: ratelimit_mw...`` directives."""
    names: set[str] = set()
    statement = re.compile(r"^\s*(?:>>>\s*)?from\s+(ratelimit_mw(?:\.\w+)*)\s+import\s+"
                           r"(\([^)]*\)|[^\n]+)", re.MULTILINE)
    directive = re.compile(r"^:::\s+(ratelimit_mw[\w.]*)", re.MULTILINE)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for module, imported in statement.findall(text):
            imported = re.sub(r"#[^\n]*", "", imported).strip("() \n")
            for item in imported.split(","):
                name = item.split(" as ")[0].strip()
                if name:
                    names.add(f"{module}.{name}")
        names.update(directive.findall(text))
    return sorted(names)


# --- the build and twine ---------------------------------------------------------------


def test_twine_check_strict_passes(dists: Dists) -> None:
    result = run(sys.executable, "-m", "twine", "check", "--strict", dists.wheel, dists.sdist)
    assert succeeded(result)
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_dist_names_carry_the_version(dists: Dists) -> None:
    version = ratelimit_mw.__version__
    assert dists.wheel.name == f"ratelimit_mw-{version}-py3-none-any.whl"
    assert dists.sdist.name == f"ratelimit_mw-{version}.tar.gz"


# --- the wheel -------------------------------------------------------------------------


def test_wheel_has_exactly_the_package_files(wheel_files: dict[str, bytes]) -> None:
    """Every module, the cache subpackage and py.typed: the source tree, file for file."""
    expected = {
        f"ratelimit_mw/{path.relative_to(PACKAGE).as_posix()}"
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert "ratelimit_mw/py.typed" in expected
    assert {"ratelimit_mw/cache/__init__.py", "ratelimit_mw/_strategies/base.py"} <= expected
    packaged = {name for name in wheel_files if not name.startswith(dist_info())}
    assert packaged == expected


def test_wheel_dist_info(wheel_files: dict[str, bytes]) -> None:
    info = dist_info()
    assert wheel_files[f"{info}/licenses/LICENSE"] == (ROOT / "LICENSE").read_bytes()
    wheel_meta = Parser().parsestr(wheel_files[f"{info}/WHEEL"].decode())
    assert wheel_meta["Root-Is-Purelib"] == "true"
    assert wheel_meta.get_all("Tag") == ["py3-none-any"]
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel_files[f"{info}/entry_points.txt"].decode())
    assert dict(entry_points["console_scripts"]) == {"ratelimit-mw": "ratelimit_mw.cli:main"}


def test_metadata_identity_and_licence(metadata: Message) -> None:
    assert metadata["Name"] == "ratelimit-mw"
    assert metadata["Version"] == ratelimit_mw.__version__
    assert tuple(map(int, metadata["Metadata-Version"].split("."))) >= (2, 4)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["License"] is None  # PEP 639: the expression replaces it
    classifiers = metadata.get_all("Classifier")
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639 forbids both
    assert metadata["Summary"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "ratelimit-mw" in metadata.get_payload()  # the README is the long description


def test_metadata_python_versions_agree(metadata: Message) -> None:
    requires = SpecifierSet(metadata["Requires-Python"])
    classifiers = metadata.get_all("Classifier")
    versions = [c.rsplit(" :: ", 1)[1] for c in classifiers
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert versions == PYTHONS
    assert all(requires.contains(f"{version}.0") for version in versions)
    assert not requires.contains("3.9.0")
    for expected in ("Framework :: AsyncIO", "Framework :: Django", "Framework :: FastAPI",
                     "Framework :: Flask", "Environment :: Web Environment",
                     "Typing :: Typed"):
        assert expected in classifiers


def test_metadata_extras_and_dependencies(metadata: Message) -> None:
    requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist")]
    base = {req.name for req in requirements if req.marker is None}
    assert base == {"limits"}  # redis, prometheus-client: extras only
    assert set(EXTRAS) <= set(metadata.get_all("Provides-Extra"))
    for extra, needed in EXTRAS.items():
        brought = {req.name for req in requirements
                   if req.marker is not None and req.marker.evaluate({"extra": extra})}
        assert needed in brought, (extra, brought)


def test_metadata_project_urls(metadata: Message) -> None:
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL"))
    assert set(urls) >= PROJECT_URLS
    assert all(url.startswith("https://") for url in urls.values())


# --- the sdist -------------------------------------------------------------------------


def test_sdist_contents(dists: Dists) -> None:
    top = f"ratelimit_mw-{ratelimit_mw.__version__}"
    with tarfile.open(dists.sdist) as sdist:
        names = {name.removeprefix(f"{top}/") for name in sdist.getnames()}
        member = sdist.extractfile(f"{top}/PKG-INFO")
        assert member is not None
        pkg_info = Parser().parsestr(member.read().decode())
    for required in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO",
                     "src/ratelimit_mw/__init__.py", "src/ratelimit_mw/py.typed",
                     "src/ratelimit_mw/cache/__init__.py", "tests/conftest.py",
                     "docs/index.md"):
        assert required in names, required
    for name in names:
        first = name.split("/", 1)[0]
        assert first not in {".venv", ".ci", ".git", "benchmarks", "site", "dist", "scripts"}, name
        assert "__pycache__" not in name
        assert not name.endswith(".pyc")
    assert pkg_info["Version"] == ratelimit_mw.__version__
    assert pkg_info["License-Expression"] == "MIT"


def test_changelog_has_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    version = re.escape(ratelimit_mw.__version__)
    assert re.search(rf"^## \[{version}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.MULTILINE)
    assert re.search(rf"^\[{version}\]: https://", changelog, re.MULTILINE)


# --- installed alone in a fresh venv ---------------------------------------------------


def test_fresh_venv_has_no_extras(fresh_venv: Path) -> None:
    """What the tests below rely on: only the required dependencies are there."""
    found = probe(fresh_venv, "extras_absent",
                  {"modules": ["ratelimit_mw", "limits", "redis", "prometheus_client",
                               "starlette", "uvicorn"]})
    assert found == {"ratelimit_mw": True, "limits": True, "redis": False,
                     "prometheus_client": False, "starlette": False, "uvicorn": False}


def test_installed_public_api_is_complete(fresh_venv: Path) -> None:
    """``__all__`` resolves, is sorted and unique, and is what ``import *`` gives; every
    public class of the modules ``__init__`` imports from is exported (or allow-listed);
    every module imports without extras; every name the docs import or render exists,
    and what they import from the package itself is in ``__all__``."""
    documented = documented_names()
    facts = probe(fresh_venv, "api", {"documented": documented})
    site = fresh_venv / "lib"
    assert Path(facts["file"]).is_relative_to(site), facts["file"]  # the wheel, not src/
    assert facts["version"] == ratelimit_mw.__version__
    names = facts["all"]
    assert facts["unresolved"] == []
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert facts["star"] == names
    assert facts["import_errors"] == {}
    assert "ratelimit_mw.cache._store" in facts["modules"]

    missing = sorted(
        f"{module}.{cls}"
        for module, classes in facts["public_classes"].items() for cls in classes
        if cls not in names and f"{module}.{cls}" not in NOT_EXPORTED
    )
    assert missing == [], "export these from ratelimit_mw (or allow-list them here)"
    stale = sorted(entry for entry in NOT_EXPORTED
                   if entry.rsplit(".", 1)[1] not in
                   facts["public_classes"].get(entry.rsplit(".", 1)[0], []))
    assert stale == [], "NOT_EXPORTED names classes that no longer exist"

    assert "ratelimit_mw.RateLimitMiddleware" in documented  # the scan finds something
    broken = {name: error for name, error in facts["documented"].items() if error}
    assert broken == {}
    # `from ratelimit_mw import X` in the docs: X is exported (or is a submodule).
    from_package = {name.removeprefix("ratelimit_mw.") for name in documented
                    if name.count(".") == 1}
    submodules = {module.removeprefix("ratelimit_mw.") for module in facts["modules"]}
    assert sorted(from_package - submodules - set(names)) == []


def test_installed_memory_storage_works_without_extras(fresh_venv: Path) -> None:
    facts = probe(fresh_venv, "memory")
    asgi = facts["asgi"]
    assert [call["status"] for call in asgi] == [200, 200, 429, 200]
    assert asgi[0]["body"] == "ok"
    assert {"ratelimit-policy", "ratelimit", "x-ratelimit-remaining"} <= set(asgi[0]["headers"])
    assert "retry-after" in asgi[2]["headers"]
    assert json.loads(asgi[2]["body"])["status"] == 429  # the problem+json body
    assert asgi[3]["headers"] == ["content-type"]  # exempt: no quota headers
    assert asgi[3]["decision"] == "None"
    assert "Decision(" in asgi[0]["decision"]
    assert [status for status, _ in facts["wsgi"]] == ["200 OK", "429 Too Many Requests"]
    assert facts["limiter"] == [True, False]


REDIS_URLS = ["redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/0",
              "redis+unix:///tmp/redis.sock", "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
              "redis+sentinel://127.0.0.1:26379/mymaster"]


@pytest.fixture(scope="module")
def missing_extras(fresh_venv: Path) -> dict[str, Any]:
    errors: dict[str, Any] = probe(fresh_venv, "missing_extras", {"urls": REDIS_URLS})
    return errors


@pytest.mark.parametrize("attempt", [
    *(f"{cls}({url!r})" for url in REDIS_URLS for cls in ("RateLimiter", "AsyncRateLimiter")),
    "RateLimitMiddleware(storage=redis://)",
    "WSGIRateLimitMiddleware(storage=redis://)",
    "RedisCache(redis://)",
    "AsyncRedisCache(redis://)",
])
def test_installed_redis_without_the_extra_says_which_extra(
        missing_extras: dict[str, Any], attempt: str) -> None:
    error = missing_extras[attempt]
    assert error is not None, f"{attempt} worked without redis installed?"
    assert error["is_configuration_error"], error
    assert "ratelimit-mw[redis]" in error["message"], error


def test_installed_prometheus_without_the_extra_says_which_extra(
        missing_extras: dict[str, Any]) -> None:
    error = missing_extras["PrometheusMetrics()"]
    assert error is not None
    assert error["is_configuration_error"], error
    assert "ratelimit-mw[prometheus]" in error["message"], error


def test_installed_console_script(fresh_venv: Path) -> None:
    script = fresh_venv / "bin" / "ratelimit-mw"
    env = clean_env()
    helped = run(script, "--help", cwd=fresh_venv, env=env)
    assert succeeded(helped)
    for command in ("check", "inspect", "reset", "config", "demo"):
        assert command in helped.stdout
    module = run(fresh_venv / "bin" / "python", "-I", "-m", "ratelimit_mw.cli", "--help",
                 cwd=fresh_venv, env=env)
    assert succeeded(module)
    assert module.stdout == helped.stdout

    config = run(script, "config", cwd=fresh_venv, env=env)
    assert succeeded(config)
    assert json.loads(config.stdout)["storage"] == "memory://"

    # check against a Redis URL: fails before any connection, naming the extra.
    checked = run(script, "check", "--redis-url", "redis://127.0.0.1:6379/0",
                  cwd=fresh_venv, env=env)
    assert checked.returncode == 1, checked.stdout
    assert "ratelimit-mw[redis]" in checked.stdout
