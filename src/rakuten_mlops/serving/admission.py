"""Admission control: a worker refuses prediction work beyond its in-flight limits at once.

Without a limit, every request a worker accepts joins the micro-batcher's queue and waits its
turn: under more load than the worker can serve, the queue, and with it the latency of every
request, grows for as long as the overload lasts, until clients time out (they still cost the
work). With a limit, a worker keeps at most ``max_single`` ``/predict`` and ``max_batch``
``/predict/batch`` requests in flight (admitted and not yet answered); one more is answered 503
with ``Retry-After`` before its body is read, which costs less than serving it, though not
nothing: a worker can refuse only a few times what it can serve (docs/serving.md, "Overload").
So the work queued ahead of an admitted request stays bounded, and the excess goes back to the
client (or the load balancer) to retry elsewhere or later. Other paths (probes, metrics, admin)
are never refused.

Singles and batches have separate limits: a batch is up to ``RAKUTEN_MAX_BATCH_ITEMS`` rows of
work, whose item count is known only once its body is parsed, and a few batches in flight must
not lock single predictions out (docs/serving.md, "Overload").

The counters are plain integers: a worker runs one event loop, and nothing awaits between a
check and its increment.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from rakuten_mlops.serving.errors import OverloadedError, domain_error
from rakuten_mlops.serving.middleware import SHED


@dataclass(slots=True)
class _Gate:
    limit: int
    shed_counter: object  # the route's child of rakuten_http_requests_shed_total
    inflight: int = 0


class AdmissionControl:
    """ASGI layer: in-flight limits on ``POST /predict`` and ``POST /predict/batch``; 0 is no limit."""

    def __init__(self, app: ASGIApp, *, max_single: int, max_batch: int, metrics) -> None:
        self.app = app
        self.gates = {
            path: _Gate(limit, metrics.shed.labels(path))
            for path, limit in (("/predict", max_single), ("/predict/batch", max_batch))
            if limit > 0
        }
        status, body, headers = domain_error(
            OverloadedError("this API worker is at its limit of requests in flight: retry later")
        )
        content = orjson.dumps(body)
        self._start = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
            ],
        }
        self._body = {"type": "http.response.body", "body": content}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = (
            self.gates.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        )
        if gate is None:
            await self.app(scope, receive, send)
            return
        if gate.inflight >= gate.limit:
            gate.shed_counter.inc()
            scope[SHED] = True
            await send(self._start)
            await send(self._body)
            return
        gate.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            gate.inflight -= 1
