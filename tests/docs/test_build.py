"""The documentation site builds with ``mkdocs build --strict`` (API reference included)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.docs.codeblocks import ROOT


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    # the API reference is generated from the docstrings
    reference = (site / "reference" / "middleware" / "index.html").read_text(encoding="utf-8")
    assert "ratelimit_mw.RateLimitMiddleware" in reference
    assert "Rate limiting and quota headers in front of any ASGI application" in reference
    assert (site / "troubleshooting" / "index.html").is_file()
    assert (site / "migrating-slowapi" / "index.html").is_file()
    assert (site / "migrating-flask-limiter" / "index.html").is_file()
