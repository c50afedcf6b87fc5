"""A local HTTP receiver for webhook alerts, used by the demo and the tests.

It records every POST body (parsed as JSON when possible) and its ``Idempotency-Key`` header,
and can be told to answer with an
error status to simulate a notifier outage. Point apprise at it with ``json://host:port/path``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    port: int = 0
    record_path: Path | None = None  # when set, each payload is appended as one JSON line
    status: int = 200
    received: list[dict] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def url(self, path: str = "/alerts") -> str:
        """An apprise URL that posts JSON to this receiver."""
        return f"json://{self.host}:{self.port}{path}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.status
                if status < 300:
                    receiver._record(self.path, body, self.headers.get("Idempotency-Key"))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        ).start()
        return self

    def _record(self, path: str, body: bytes, idempotency_key: str | None = None) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"raw": body.decode("utf-8", "replace")}
        entry = {"path": path, "payload": payload}
        if idempotency_key is not None:  # the only header kept: others may carry credentials
            entry["idempotency_key"] = idempotency_key
        with self._lock:
            self.received.append(entry)
            if self.record_path:
                with open(self.record_path, "a", encoding="utf-8") as out:
                    out.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
