"""The dashboard's HTTP server (standard library only; the page has no external assets, so
it works on a machine with no internet). It reads the run store on every request, so a page
open while training runs shows each round as it is recorded.

    GET /                         the page
    GET /api/runs                 every run, newest first
    GET /api/runs/<id>            one run: config, rounds, participation, metrics, comparison
    GET /api/runs/<id>/audit      the audit chain's verdict
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote

from fedsilo.errors import ConfigError
from fedsilo.store.run_store import RunStore

log = logging.getLogger(__name__)


def _page() -> bytes:
    return resources.files("fedsilo.dashboard").joinpath("index.html").read_bytes()


def make_handler(store: RunStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            try:
                if path in ("/", "/index.html"):
                    self._send(200, _page(), "text/html; charset=utf-8")
                elif path == "/api/runs":
                    self._json(store.runs())
                elif path.startswith("/api/runs/") and path.endswith("/audit"):
                    self._json(asdict(store.verify(unquote(path[10:-6]))))
                elif path.startswith("/api/runs/"):
                    self._json(store.run(unquote(path[10:])))
                else:
                    self._send(404, b"not found", "text/plain")
            except ConfigError as e:
                self._send(404, json.dumps({"error": str(e)}).encode(), "application/json")

        def _json(self, value: Any) -> None:
            self._send(200, json.dumps(value, default=str).encode(), "application/json")

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dashboard: " + format, *args)

    return Handler


class Dashboard:
    """The dashboard server on `host:port` (port 0: a free one, see `.port`)."""

    def __init__(self, store: RunStore, host: str = "127.0.0.1", port: int = 8050) -> None:
        self.server = ThreadingHTTPServer((host, port), make_handler(store))
        self.port = int(self.server.server_address[1])
        self.url = f"http://{host}:{self.port}/"
        self._thread: threading.Thread | None = None

    def start(self) -> Dashboard:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
