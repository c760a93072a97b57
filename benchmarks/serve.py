"""App factories for the servers, configured by the environment.

``BENCH_VARIANT`` (see :mod:`benchmarks.apps`), ``BENCH_STORAGE`` (a URL) and, for the
ASGI flood, ``BENCH_LIMIT`` (a limit such as ``500/second``)::

    uvicorn --factory benchmarks.serve:asgi
    gunicorn 'benchmarks.serve:wsgi()'
"""

from __future__ import annotations

import os
from typing import Any

from .apps import build_asgi, build_wsgi

__all__ = ["asgi", "wsgi"]


def asgi() -> Any:
    return build_asgi(os.environ["BENCH_VARIANT"], os.environ["BENCH_STORAGE"],
                      limit=os.environ.get("BENCH_LIMIT") or None).app


def wsgi() -> Any:
    return build_wsgi(os.environ["BENCH_VARIANT"], os.environ["BENCH_STORAGE"]).app
