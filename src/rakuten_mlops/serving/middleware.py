"""Pure ASGI middleware: request metrics, and the body guard (size limit, UTF-8)."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rakuten_mlops.serving.errors import error_body

UNMATCHED = "<unmatched>"


PREDICTION_PATHS = frozenset({"/predict", "/predict/batch"})
SHED = "rakuten.shed"  # scope key admission control sets on a request it refused
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Counts and times every HTTP request by route template, method and status.

    Labels are bounded: unknown paths count as ``<unmatched>``, unknown methods as ``OTHER``.
    The labelled children are cached per (route, method, status): ``labels()`` takes a lock
    and builds its key on every call.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics,
        known_paths: frozenset[str] = frozenset(),
        version_of: Callable[[], str | None] | None = None,
    ):
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths
        # the served model version, for the per-version metrics of the prediction paths
        self.version_of = version_of
        self._children: dict[tuple[str, str, int], tuple] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None)
            if path is None:
                path = scope["path"] if scope["path"] in self.known_paths else UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            key = (path, method, status)
            children = self._children.get(key)
            if children is None:
                labels = (path, method, str(status))
                children = self._children[key] = (
                    self.metrics.requests.labels(*labels),
                    self.metrics.latency.labels(*labels),
                )
            children[0].inc()
            # a request refused by admission control is counted, not timed (the latency is of
            # requests served, as when the HTTP protocol refuses), and says nothing of the model
            if SHED not in scope:
                elapsed = time.perf_counter() - started
                children[1].observe(elapsed)
                if self.version_of is not None and path in PREDICTION_PATHS:
                    version = self.version_of()
                    if version:
                        self.metrics.record_model_request(version, status >= 500, elapsed)


class BodyRejected(Exception):
    """A request body refused before parsing (size, content type, encoding)."""

    def __init__(self, status: int, message: str, field: str = "body"):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class ClientGone(Exception):
    """The client disconnected before sending its whole body."""


async def read_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    """The whole request body: JSON content type, at most ``max_bytes``, valid UTF-8.

    Raises :class:`BodyRejected` (415, 413, 400) before reading more than ``max_bytes``.
    """
    for name, value in scope["headers"]:
        if name == b"content-type" and not _is_json(value):
            raise BodyRejected(415, "Content-Type must be application/json", "content-type")
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise BodyRejected(400, "invalid Content-Length header") from None
            if declared > max_bytes:
                raise BodyRejected(413, f"request body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyRejected(413, f"request body is larger than {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyRejected(400, f"request body is not valid UTF-8 (byte {exc.start})") from None
    return body


class BodyGuard:
    """Rejects bodies over ``max_bytes`` with 413 and non-UTF-8 bodies with 400, before any parsing."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.max_bytes)
        except BodyRejected as exc:
            await reply(send, exc.status, error_body(exc.message, exc.field))
            return
        except ClientGone:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


async def reply(send: Send, status: int, content: object, headers: dict[str, str] | None = None) -> None:
    """Send ``content`` as a JSON response (the raw-ASGI twin of ``OrjsonResponse``)."""
    body = orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if headers:
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
