"""A tiny app for the verification tests: a Spring-style health endpoint with components, a
login API, and ERROR lines on its output.

    PORT          port to listen on
    REDIS_DOWN    "1": the health endpoint reports redis DOWN (and answers 503, as Spring does)
    ERROR_LINES   how many "ERROR ..." lines to print at start (default 0)
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REDIS_DOWN = os.environ.get("REDIS_DOWN") == "1"


class Handler(BaseHTTPRequestHandler):
    """GET /actuator/health, POST /api/login, GET / (the revision)."""

    def do_GET(self) -> None:
        if self.path == "/actuator/health":
            redis = "DOWN" if REDIS_DOWN else "UP"
            components = {"db": {"status": "UP"}, "redis": {"status": redis}}
            self._json(503 if REDIS_DOWN else 200, {"status": redis, "components": components})
        else:
            self._json(200, {"revision": os.environ.get("ZERODOWN_REVISION", "")})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        self._json(200, {"data": {"token": f"tok-{body.get('user', '')}"}})

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: the log scan counts only the lines printed on purpose


def main() -> None:
    """Print the requested ERROR lines, then serve until SIGTERM."""
    for i in range(int(os.environ.get("ERROR_LINES", "0"))):
        print(f"ERROR payment gateway timeout #{i}", flush=True)
    print("INFO ready", flush=True)
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    try:
        server.serve_forever()
    finally:
        sys.stdout.flush()


if __name__ == "__main__":
    main()
