"""The worker's HTTP/1.1 protocol: uvicorn's httptools protocol that refuses prediction requests
beyond the in-flight limits as soon as their headers are parsed.

Refused in the ASGI app, a request costs uvicorn its scope, a task, the ASGI send path (two
writes, header checks) and the app's layers: about as much as serving a single prediction,
so under a surge a worker would spend its core refusing, and every request, admitted or not,
would wait in the socket buffers behind the refusals (docs/serving.md, "Overload"). Here a
refusal is the prepared response of ``Admission.http_refusal`` written to the transport in one
call, and the rest of the request (its body, if any) is read and dropped by the parser, with no
task and no ASGI request.

What the protocol decides, and what it leaves to ``AdmissionControl`` (the same gates):

- only a ``POST`` whose request-target is exactly a limited path (``/predict``,
  ``/predict/batch``, with any query string), that is not an upgrade, and that arrives while
  its connection has no response pending. A request pipelined behind another waits for that
  one's answer, and is left to the ASGI layer when its turn comes: its refusal must not
  overtake the answer before it;
- an admitted request holds its slot from its headers on (``ADMITTED`` in its scope); the ASGI
  layer releases it when the request is answered or its client leaves;
- a refused request's connection stays open for the next request, unless the client asked to
  close it (``Connection: close``, HTTP/1.0) or sent ``Expect: 100-continue``: such a client
  gets a final answer instead of ``100 Continue`` (RFC 9110, 10.1.1), and a connection kept
  open would oblige it to send a body that is read for nothing (or, if it does not, leave the
  connection waiting for bytes that never come). Then the refusal says ``connection: close``
  and is the connection's last answer: no request after it is processed (a pipelining client
  sends again what was not answered, RFC 9112, 9.3.2), the sending side is shut at once (the
  client reads the answer, then the end), and what still comes is read and dropped until the
  client closes its side or the keep-alive timeout passes: a socket closed with unread bytes
  sends a reset, which fails the client's writes and can destroy the answer in its buffers
  before it is read (RFC 9112, 9.6).

With uvicorn's ``limit_concurrency`` set, uvicorn may answer a request itself without calling
the app; the protocol then decides nothing (the ASGI layer still does).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rakuten_mlops.serving.admission import ADMITTED, Gate, worker_admission


class AdmissionHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with the worker's admission gates checked before the ASGI app."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admission = worker_admission() if self.limit_concurrency is None else None
        self.refusing = False  # the rest of a refused request is still to be read and dropped
        self.ended = False  # a refusal closed the connection: everything after it is dropped

    def data_received(self, data: bytes) -> None:
        if not self.ended:  # (no parsing, and the keep-alive timeout keeps running)
            super().data_received(data)

    def on_headers_complete(self) -> None:
        if self.ended:
            return
        admission = self.admission
        if admission is not None and (self.cycle is None or self.cycle.response_complete):
            # a refused request's keep-alive timer may run (a next request in the same read)
            self._unset_keepalive_if_required()
            gate = admission.raw_gates.get(self.url.partition(b"?")[0])
            if gate is not None and self.parser.get_method() == b"POST" and not self.parser.should_upgrade():
                if gate.inflight >= gate.limit:
                    self._refuse(gate)
                    return
                gate.inflight += 1
                self.scope[ADMITTED] = gate  # type: ignore[literal-required]
        super().on_headers_complete()

    def _refuse(self, gate: Gate) -> None:
        gate.shed_counter.inc()
        gate.refused_counter.inc()
        self.server_state.total_requests += 1
        keep_alive = (
            not self.expect_100_continue
            and self.parser.get_http_version() != "1.0"
            and self.parser.should_keep_alive()
        )
        self.transport.write(self.admission.http_refusal(self.server_state.default_headers, keep_alive))
        if keep_alive:
            self.refusing = True
            return
        self.ended = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm_keepalive()

    def _arm_keepalive(self) -> None:
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _should_upgrade(self) -> bool:
        return not self.ended and super()._should_upgrade()

    def send_400_response(self, msg: str) -> None:
        if not self.ended:  # (bytes after the last answer are not parsed as a request)
            super().send_400_response(msg)

    def on_body(self, body: bytes) -> None:
        if not (self.refusing or self.ended):
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.ended:
            return
        if not self.refusing:
            super().on_message_complete()
            return
        self.refusing = False
        if not self.transport.is_closing():
            self._arm_keepalive()
