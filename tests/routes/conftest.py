"""Django for the route-discovery tests: the demo project's settings (Django is set up
once per process), with this package's URLconf swapped in per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

DJANGO_DIR = Path(__file__).resolve().parents[2] / "examples" / "django"


@pytest.fixture
def django_urls(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Django set up with ``tests.routes.django_urls`` as ROOT_URLCONF."""
    monkeypatch.syspath_prepend(str(DJANGO_DIR))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    import django
    from django.conf import settings

    django.setup()
    # Not django.test's override_settings: importing django.test creates lazy objects
    # (staticfiles' storage) that fail when the tests' pool sweep (gc) touches them.
    monkeypatch.setattr(settings, "ROOT_URLCONF", "tests.routes.django_urls")
    yield
    assert "django" in sys.modules
