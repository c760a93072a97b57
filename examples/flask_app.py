"""A Flask app behind ratelimit-mw's WSGI middleware.

Run it on werkzeug's development server (in-memory counters, unless $REDIS_URL is set)::

    python examples/flask_app.py [--host 127.0.0.1] [--port 5000]

In production, serve ``flask_app:app`` with gunicorn or uWSGI as usual: the middleware
lives inside the app object. With several worker processes, give it a Redis
(``REDIS_URL=redis://...``), or every worker keeps counters of its own.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence

from flask import Flask, Response, jsonify, request

from ratelimit_mw import Decision, Rule, WSGIRateLimitMiddleware, limit

# Limits can also sit on the view (see login below); rules here are tried first.
RULES = [
    # /items/1 and /items/2 share this counter: ids are not a way around the limit.
    Rule("/items/{id}", "10/minute"),
    Rule("/health", exempt=True),
]

USAGE = """\
ratelimit-mw demo: Flask at {base}

# 5/minute on POST /login: 200 five times, then 429 (application/problem+json)
for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "%{{http_code}}\\n" -X POST {base}/login; done
# 10/minute, one counter for every /items/<id>; the view returns the decision it read
curl -i {base}/items/1
# exempt: no quota headers, never limited
curl -i {base}/health
# streamed, counted against the 60/minute default
curl -N -i {base}/stream
"""


def create_app(storage: str | None = None) -> Flask:
    """A fresh app with fresh counters; *storage* ``None`` means $REDIS_URL, else memory."""
    app = Flask(__name__)

    @app.get("/")
    def home() -> Response:
        return Response(USAGE.format(base=request.host_url.rstrip("/")),
                        mimetype="text/plain")

    # Found from app.url_map when the first request comes, under the rule's path.
    @app.post("/login")
    @limit("5/minute")
    def login() -> Response:
        return jsonify(status="ok", detail="this demo checks no passwords")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Response:
        # The WSGI middleware leaves its decision in the environ.
        decision: Decision = request.environ["ratelimit_mw.decision"]
        quota = decision.quotas[0] if decision.quotas else None  # none if storage failed
        return jsonify(item_id=item_id, ratelimit={
            "allowed": decision.allowed,
            "rule": decision.plan.rule,
            "limit": quota.limit.amount if quota else None,
            "remaining": quota.remaining if quota else None,
        })

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="ok")

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            for number in range(1, 4):
                yield f"chunk {number}\n"
                time.sleep(0.1)  # slow enough to watch with curl -N

        # The middleware adds its headers in start_response and returns the app's
        # iterable as it is: the server sends each chunk as the generator yields it.
        return Response(chunks(), mimetype="text/plain")

    # Wrap wsgi_app, not app: `app` stays a Flask object (CLI, test client, extensions
    # keep working) while every request still passes the limiter first.
    app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, storage=storage, default_limits="60/minute", rules=RULES
    )
    return app


app = create_app()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the ratelimit-mw Flask demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)

    print(USAGE.format(base=f"http://{args.host}:{args.port}"), flush=True)
    print(f"counting with {app.wsgi_app.limiter!r}\n", flush=True)  # type: ignore[attr-defined]
    app.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
