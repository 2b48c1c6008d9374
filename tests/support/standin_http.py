"""One stand-in HTTP server for the systems that cannot run on this machine (the Argo server, the
Kubernetes API for kubectl/helm lookups): it records every request and answers with what the
test's ``respond`` function returns. Real HTTP on loopback; only the far side is a stand-in."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RecordedRequest = dict[str, Any]  # {"method", "path", "auth" (Authorization header), "body" (parsed JSON)}
# (status, JSON payload) or (status, payload, headers); a bytes payload is sent as it is
Respond = Callable[[RecordedRequest], tuple[int, Any] | tuple[int, Any, dict[str, str]]]


class StandInHttpServer:
    """``respond(request)`` served on a loopback port (``port``, a free one by default); the
    requests that ``record`` accepts (all by default) are kept in ``requests``, in arrival order.
    ``keep_alive`` speaks HTTP/1.1 with persistent connections (HTTP/1.0 otherwise)."""

    def __init__(
        self,
        respond: Respond,
        record: Callable[[RecordedRequest], bool] = lambda r: True,
        *,
        port: int = 0,
        keep_alive: bool = False,
    ) -> None:
        self.requests: list[RecordedRequest] = []
        recorded, answer, keep = self.requests, respond, record

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                request = {
                    "method": self.command,
                    "path": self.path,
                    "auth": self.headers.get("Authorization"),
                    "body": json.loads(raw) if raw else None,
                }
                if keep(request):
                    recorded.append(request)
                status, payload, *extra = answer(request)
                headers = {"Content-Type": "application/json", **(extra[0] if extra else {})}
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 - http.server's naming

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="stand-in-http", daemon=True)

    def start(self) -> StandInHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> StandInHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
