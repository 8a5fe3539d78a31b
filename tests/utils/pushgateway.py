"""A minimal HTTP endpoint standing in for a Prometheus Pushgateway."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar


class _Gateway(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    do_PUT = do_POST = _record

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@contextlib.contextmanager
def running_gateway() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A minimal HTTP endpoint standing in for a Pushgateway; records what is pushed."""
    _Gateway.received = []
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}", _Gateway.received
    server.shutdown()
    server.server_close()
