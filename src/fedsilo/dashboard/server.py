"""The dashboard's HTTP server (standard library only; the page has no external assets, so
it works on a machine with no internet). It reads the run store on every request, so a page
open while training runs shows each round as it is recorded.

    GET /, /app.js, /style.css    the page (no data in it; no inline script)
    GET /api/runs                 every run, newest first
    GET /api/runs/<id>            one run: config, rounds, participation, metrics, comparison
    GET /api/runs/<id>/audit      the audit chain's verdict

Every answer is strict JSON (NaN and infinities as null) and carries the headers of
guard.HEADERS; requests for another host name get 421, API requests without the token (when
one is needed, see guard.Access) get 401.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote

from fedsilo.dashboard.guard import HEADERS, TOKEN_HEADER, WILDCARDS, Access, is_loopback
from fedsilo.errors import ConfigError
from fedsilo.store.run_store import RunStore
from fedsilo.store.values import strict_json

log = logging.getLogger(__name__)

FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/index.html": ("index.html", "text/html; charset=utf-8"),
         "/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/style.css": ("style.css", "text/css; charset=utf-8")}


def _file(name: str) -> bytes:
    return resources.files("fedsilo.dashboard").joinpath(name).read_bytes()


def _api(store: RunStore, path: str) -> Any:
    """The JSON value an /api/ path asks for (None: no such path)."""
    if path == "/api/runs":
        return store.runs()
    if path.startswith("/api/runs/") and path.endswith("/audit"):
        return asdict(store.verify(unquote(path[10:-6])))
    if path.startswith("/api/runs/"):
        return store.run(unquote(path[10:]))
    return None


def make_handler(store: RunStore, access: Access) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path, _, query = self.path.partition("?")
            if not access.host_ok(self.headers.get("Host")):
                self._send(421, b"misdirected request: this dashboard does not answer to "
                                b"that host name", "text/plain; charset=utf-8")
            elif path in FILES:
                name, kind = FILES[path]
                self._send(200, _file(name), kind)
            elif not path.startswith("/api/"):
                self._send(404, b"not found", "text/plain; charset=utf-8")
            elif not access.token_ok(query, self.headers.get(TOKEN_HEADER)):
                self._json(401, {"error": "this dashboard needs its token: ?token=... or the "
                                          f"{TOKEN_HEADER} header"})
            else:
                self._answer(path)

        def _answer(self, path: str) -> None:
            try:
                value = _api(store, path)
            except ConfigError as e:  # no such run
                self._json(404, {"error": str(e)})
            except Exception as e:  # noqa: BLE001 (the store is down: say so, keep serving)
                log.warning("dashboard: the run store %s cannot be read: %s", store.url,
                            store.describe(e))
                self._json(503, {"error": "the run store cannot be read now"})
            else:
                if value is None:
                    self._json(404, {"error": "not found"})
                else:
                    self._json(200, value)

        def _json(self, code: int, value: Any) -> None:
            self._send(code, strict_json(value).encode(), "application/json")

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dashboard: " + format, *args)

    return Handler


class Dashboard:
    """The dashboard server on `host:port` (port 0: a free one, see `.port`).

    Raises:
        ConfigError: it cannot listen on `host:port`.

    Args:
        token: the token the API needs when bound beyond loopback (None: a random one); on
            loopback none is needed unless one is given.

    Attributes:
        address: the page's address; url: the same with `?token=` when a token is needed.
        public: bound to something other than loopback (reachable from other machines).
    """

    def __init__(self, store: RunStore, host: str = "127.0.0.1", port: int = 8050,
                 token: str | None = None) -> None:
        self.access = Access.for_bind(host, token)
        try:
            self.server = ThreadingHTTPServer((host, port), make_handler(store, self.access))
        except OSError as e:  # the port is taken, the address is not this machine's
            raise ConfigError(f"cannot serve the dashboard on {host}:{port}: "
                              f"{e.strerror or type(e).__name__}") from None
        self.port = int(self.server.server_address[1])
        self.public = not is_loopback(host)
        shown = socket.gethostname() if host in WILDCARDS else host
        self.address = f"http://{shown}:{self.port}/"
        token = self.access.token
        self.url = self.address + (f"?token={quote(token)}" if token else "")
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
