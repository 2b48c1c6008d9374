"""Admission control: a worker refuses prediction work beyond its in-flight limits at once.

Without a limit, every request a worker accepts joins the micro-batcher's queue and waits its
turn: under more load than the worker can serve, the queue, and with it the latency of every
request, grows for as long as the overload lasts, until clients time out (they still cost the
work). With a limit, a worker keeps at most ``max_single`` ``/predict`` and ``max_batch``
``/predict/batch`` requests in flight (admitted and not yet answered); one more is answered 503
with ``Retry-After`` before its body is read. So the work queued ahead of an admitted request
stays bounded, and the excess goes back to the client (or the load balancer) to retry elsewhere
or later. Other paths (probes, metrics, admin) are never refused.

A worker's limits are one :class:`Admission` (its gates, one per limited path), checked in two
places:

- the worker's HTTP protocol (``protocol.py``), as soon as a request's headers are parsed: a
  refusal there is a prepared response written to the socket, before uvicorn builds an ASGI
  request (scope, task, send path), which would cost about as much as serving a single
  prediction (docs/serving.md, "Overload"). A request it admits holds its slot from then on,
  and says so in its scope (``ADMITTED``);
- :class:`AdmissionControl`, the ASGI layer in front of the app, for requests the protocol did
  not see or did not decide: in-process ASGI clients, other servers, a request pipelined behind
  another on its connection. It releases every slot when the request is answered.

Singles and batches have separate limits: a batch is up to ``RAKUTEN_MAX_BATCH_ITEMS`` rows of
work, whose item count is known only once its body is parsed, and a few batches in flight must
not lock single predictions out (docs/serving.md, "Overload").

A refusal's ``Retry-After`` is spread over :data:`RETRY_AFTER_SECONDS`, one value per refusal in
turn: a burst refused in the same instant comes back over two seconds instead of all in the
same one (a client that honours the header literally, as urllib3's ``Retry`` does, adds no
jitter of its own). The header is whole seconds (RFC 9110), so the spread is too.

The counters are plain integers: a worker runs one event loop, and nothing awaits between a
check and its increment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from rakuten_mlops.serving.errors import OverloadedError, domain_error
from rakuten_mlops.serving.middleware import SHED

ADMITTED = "rakuten.admitted"  # scope key: the gate whose slot the HTTP protocol took for the request

#: The ``Retry-After`` values of refusals, taken in turn.
RETRY_AFTER_SECONDS = (1, 2)


@dataclass(slots=True)
class Gate:
    """The in-flight limit of one path, and its counters."""

    limit: int
    shed_counter: object  # the route's child of rakuten_http_requests_shed_total
    refused_counter: object  # the route's child of rakuten_http_requests_total{status="503"}
    inflight: int = 0


@dataclass(slots=True)
class _Prepared:
    """The refusals as HTTP/1.1 bytes, for one list of the server's default headers: one per
    ``Retry-After`` value, kept open and closing."""

    default_headers: object = None
    keep_alive: tuple[bytes, ...] = ()
    close: tuple[bytes, ...] = ()


@dataclass
class Admission:
    """A worker's in-flight limits on ``POST /predict`` and ``POST /predict/batch``; 0 is no limit."""

    max_single: int
    max_batch: int
    metrics: object
    gates: dict[str, Gate] = field(init=False)
    raw_gates: dict[bytes, Gate] = field(init=False)  # the same, by the path's bytes in a request line

    def __post_init__(self) -> None:
        self.gates = {
            path: Gate(
                limit, self.metrics.shed.labels(path), self.metrics.requests.labels(path, "POST", "503")
            )
            for path, limit in (("/predict", self.max_single), ("/predict/batch", self.max_batch))
            if limit > 0
        }
        self.raw_gates = {path.encode(): gate for path, gate in self.gates.items()}
        status, body, headers = domain_error(
            OverloadedError("this API worker is at its limit of requests in flight: retry later")
        )
        self.status = status
        self.body = orjson.dumps(body)
        fixed = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            *(
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in (headers or {}).items()
                if k.lower() != "retry-after"
            ),
        ]
        #: the response headers of a refusal, one list per ``Retry-After`` value, in turn
        self.header_sets = [[*fixed, (b"retry-after", b"%d" % s)] for s in RETRY_AFTER_SECONDS]
        self.turn = 0  # the index in RETRY_AFTER_SECONDS of the last refusal's Retry-After
        self._prepared = _Prepared()

    def next_turn(self) -> int:
        """The index of the next refusal's ``Retry-After`` value (and header list)."""
        self.turn = turn = (self.turn + 1) % len(RETRY_AFTER_SECONDS)
        return turn

    def http_refusal(self, default_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
        """The next refusal as HTTP/1.1 bytes, with the server's ``default_headers`` (``date``,
        ``server``) first, as uvicorn writes them; ``connection: close`` unless ``keep_alive``.

        Prepared once per list of default headers: uvicorn replaces the list when the second
        of its ``date`` changes.
        """
        prepared = self._prepared
        if prepared.default_headers is not default_headers:
            heads = [
                b"".join(
                    [
                        b"HTTP/1.1 %d Service Unavailable\r\n" % self.status,
                        *(name + b": " + value + b"\r\n" for name, value in (*default_headers, *headers)),
                    ]
                )
                for headers in self.header_sets
            ]
            self._prepared = prepared = _Prepared(
                default_headers,
                tuple(head + b"\r\n" + self.body for head in heads),
                tuple(head + b"connection: close\r\n\r\n" + self.body for head in heads),
            )
        return (prepared.keep_alive if keep_alive else prepared.close)[self.next_turn()]


_worker_admission: Admission | None = None


def serve_in_this_worker(admission: Admission | None) -> None:
    """Make ``admission`` the limits the worker's HTTP protocol checks (``protocol.py``).

    Called by the app factory uvicorn runs in each worker process: one served app per process.
    """
    global _worker_admission
    _worker_admission = admission


def worker_admission() -> Admission | None:
    """The limits of the app this worker process serves, if it has any."""
    return _worker_admission


class AdmissionControl:
    """ASGI layer: the in-flight limits of ``admission`` for the requests the HTTP protocol did
    not decide, and the release of every slot once its request is answered."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission
        self.gates = admission.gates
        self._starts = [
            {"type": "http.response.start", "status": admission.status, "headers": headers}
            for headers in admission.header_sets
        ]
        self._body = {"type": "http.response.body", "body": admission.body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = scope.get(ADMITTED)
        if gate is None:
            gate = (
                self.gates.get(scope["path"])
                if scope["type"] == "http" and scope["method"] == "POST"
                else None
            )
            if gate is None:
                await self.app(scope, receive, send)
                return
            if gate.inflight >= gate.limit:
                gate.shed_counter.inc()
                scope[SHED] = True
                await send(self._starts[self.admission.next_turn()])
                await send(self._body)
                return
            gate.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            gate.inflight -= 1
