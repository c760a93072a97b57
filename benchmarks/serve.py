"""App factories for the servers, configured by the environment.

``BENCH_VARIANT`` (see :mod:`benchmarks.apps`) and ``BENCH_STORAGE`` (a URL)::

    uvicorn --factory benchmarks.serve:asgi
    gunicorn 'benchmarks.serve:wsgi()'
"""

from __future__ import annotations

import os
from typing import Any

from .apps import build_asgi, build_wsgi

__all__ = ["asgi", "wsgi"]


def asgi() -> Any:
    return build_asgi(os.environ["BENCH_VARIANT"], os.environ["BENCH_STORAGE"]).app


def wsgi() -> Any:
    return build_wsgi(os.environ["BENCH_VARIANT"], os.environ["BENCH_STORAGE"]).app
