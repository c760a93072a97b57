"""Benchmarks of ratelimit-mw against the bare app, slowapi, Flask-Limiter and asgi-ratelimit.

Run ``benchmarks/run`` (see docs/benchmarks.md).
"""
