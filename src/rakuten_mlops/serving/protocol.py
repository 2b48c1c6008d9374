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
  may or may not send the body it announced, so the refusal says ``connection: close`` and the
  connection is closed once the body is in, or by the keep-alive timeout.

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
        self.close_after_refusal = False

    def on_headers_complete(self) -> None:
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
        expects_continue = self.expect_100_continue
        keep_alive = (
            not expects_continue
            and self.parser.get_http_version() != "1.0"
            and self.parser.should_keep_alive()
        )
        self.transport.write(self.admission.http_refusal(self.server_state.default_headers, keep_alive))
        self.refusing = True
        self.close_after_refusal = not keep_alive
        if expects_continue:  # the body may never come: the keep-alive timeout closes the connection
            self._arm_keepalive()

    def _arm_keepalive(self) -> None:
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def on_body(self, body: bytes) -> None:
        if not self.refusing:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refusing:
            super().on_message_complete()
            return
        self.refusing = False
        if self.close_after_refusal:
            self.transport.close()
        elif not self.transport.is_closing():
            self._arm_keepalive()
