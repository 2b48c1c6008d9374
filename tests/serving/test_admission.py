"""Admission control over real HTTP: a worker at its in-flight limit refuses prediction requests
with 503, ``Retry-After`` and a JSON error, keeps answering probes and metrics, and admits again
once a slot is free.

One ``rakuten-mlops serve`` process for the module, with tiny limits (one single, one batch),
held without timing assumptions: a request whose body lacks its last byte is admitted and stays
in flight until that byte arrives (or its client leaves). This test's client sends one request
at a time, so a 503 it gets proves that the held request holds the slot; a held request that
arrived while the client's was in flight was refused itself (its answer is waiting on its
socket), and is sent again. Every test releases what it holds.

Most refusals are written by the worker's HTTP protocol (``serving/protocol.py``) before the
ASGI app sees the request; a request pipelined behind another, or whose path is spelled with
percent-escapes, is refused by the ASGI layer (``serving/admission.py``). The raw-socket tests
check the bytes on the wire with h11, the HTTP/1.1 parser httpx uses, and that a connection
stays in step after a refusal: keep-alive, pipelining, large and chunked bodies, and the
clients that ask for the connection to close.
"""

from __future__ import annotations

import http.client
import select
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import h11
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.factories import ADMIN_TOKEN, REALISTIC_PRODUCTS, ApiProcess, register_logged
from tests.support import wait_until

pytestmark = pytest.mark.slow

SINGLE = orjson.dumps(REALISTIC_PRODUCTS[0])
BATCH = orjson.dumps({"items": REALISTIC_PRODUCTS[:3]})
JSON = {"content-type": "application/json"}
REFUSAL = {"error": "this API worker is at its limit of requests in flight: retry later"}
RETRY_AFTER = {"1", "2"}  # seconds, one per refusal in turn


@pytest.fixture(scope="module")
def api(mlflow_server, logged_pipelines, tmp_path_factory) -> Iterator[ApiProcess]:
    home = tmp_path_factory.mktemp("admission")
    name = f"rakuten_classifier_{uuid.uuid4().hex[:8]}"
    version = register_logged(mlflow_server.uri, name, logged_pipelines[0])
    process = ApiProcess(
        {
            "RAKUTEN_HOME": str(home),
            "RAKUTEN_DATABASE_URL": f"sqlite:///{home / 'data.db'}",
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
            "RAKUTEN_REGISTERED_MODEL": name,
            "RAKUTEN_MODEL_POLL_SECONDS": "0",
            "RAKUTEN_ADMIN_TOKEN": ADMIN_TOKEN,
            "RAKUTEN_FEEDBACK_TOKEN": "feedback-token-for-admission",
            "RAKUTEN_MAX_INFLIGHT": "1",
            "RAKUTEN_MAX_INFLIGHT_BATCHES": "1",
        },
        home / "api.log",
    )
    process.version = version
    process.start()
    yield process
    process.terminate()


@pytest.fixture
def client(api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=10) as c:
        yield c


class HeldRequest:
    """A POST whose body is sent but for its last byte."""

    def __init__(self, url: str, path: str, body: bytes):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.conn.putrequest("POST", path)
        self.conn.putheader("Content-Type", "application/json")
        self.conn.putheader("Content-Length", str(len(body)))
        self.conn.endheaders(body[:-1])
        self.rest = body[-1:]

    def answered(self) -> bool:
        """The server answered already (refused it) without waiting for the last byte."""
        return bool(select.select([self.conn.sock], [], [], 0)[0])

    def finish(self) -> tuple[int, dict]:
        self.conn.send(self.rest)
        response = self.conn.getresponse()
        status, body = response.status, orjson.loads(response.read())
        self.conn.close()
        return status, body

    def abandon(self) -> None:
        self.conn.close()


def hold(client: httpx.Client, path: str, body: bytes) -> tuple[HeldRequest, httpx.Response]:
    """A request held in flight on ``path`` and the 503 the worker answered another one meanwhile."""

    def attempt() -> tuple[HeldRequest, httpx.Response] | None:
        held = HeldRequest(str(client.base_url), path, body)
        time.sleep(0.05)  # its headers usually arrive while nothing else is in flight
        while not held.answered():
            rsp = client.post(path, content=body, headers=JSON)
            assert rsp.status_code in (200, 503), rsp.text
            if rsp.status_code == 503:
                return held, rsp
        held.abandon()
        return None

    return wait_until(attempt, timeout=20, interval=0, what=f"a request held in flight on {path}")


@pytest.fixture
def held(client) -> Iterator[HeldRequest]:
    """The worker's one ``/predict`` slot, held for the test and answered (200) after it."""
    request, _ = hold(client, "/predict", SINGLE)
    yield request
    if request.conn.sock is not None:
        assert request.finish()[0] == 200


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``, from ``/metrics``."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    return sum(
        s.value
        for family in families
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def shed_total(client: httpx.Client, route: str) -> float:
    return metric(client, "rakuten_http_requests_shed_total", route=route)


def refusal_counts(client: httpx.Client) -> tuple[float, float, float]:
    """Shed /predict requests, /predict 503s, and /predict 503s timed in the latency histogram."""
    return (
        shed_total(client, "/predict"),
        metric(client, "rakuten_http_requests_total", route="/predict", status="503"),
        metric(client, "rakuten_http_request_duration_seconds_count", route="/predict", status="503"),
    )


# ------------------------------------------------------------------ raw HTTP/1.1


def request(method: str, target: str, body: bytes = b"", *headers: str, version: str = "1.1") -> bytes:
    """A request's bytes: ``Content-Length`` for a body unless ``headers`` set a transfer coding."""
    lines = [f"{method} {target} HTTP/{version}", "Host: test", *headers]
    if body and not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes, size: int) -> bytes:
    """``body`` in the chunked transfer coding, ``size`` bytes a chunk."""
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return orjson.loads(self.body)


class RawConnection:
    """One TCP connection to the API: bytes out as given, responses parsed by h11 in order."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        self.pending = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, method: str = "POST") -> Response:
        """The next response on the connection (a ``100 Continue`` would fail the test)."""
        parser = h11.Connection(h11.CLIENT)
        parser.send(h11.Request(method=method, target="/", headers=[("Host", "test")]))
        parser.send(h11.EndOfMessage())
        if self.pending:  # (no data is end of file to h11)
            parser.receive_data(self.pending)
        status, headers, body = None, {}, b""
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                parser.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.pending = parser.trailing_data[0]
                return Response(status, headers, body)
            else:
                raise AssertionError(f"unexpected {event!r} before the end of a response")

    def closed_by_server(self) -> bool:
        """The server closed its side, with nothing more sent."""
        return not self.pending and self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()


def assert_refusal(rsp: Response, *, close: bool = False) -> None:
    assert rsp.status == 503, rsp.body
    assert rsp.headers["retry-after"] in RETRY_AFTER
    assert rsp.headers["content-type"] == "application/json"
    assert int(rsp.headers["content-length"]) == len(rsp.body)
    assert rsp.json() == REFUSAL
    assert ("connection" in rsp.headers) is close
    if close:
        assert rsp.headers["connection"] == "close"


@pytest.fixture
def raw(api) -> Iterator[RawConnection]:
    conn = RawConnection(api.url)
    yield conn
    conn.close()


# ------------------------------------------------------------------ tests


def test_a_worker_at_its_limit_sheds_with_503_keeps_its_probes_and_recovers(api, client):
    shed_single, shed_batch = shed_total(client, "/predict"), shed_total(client, "/predict/batch")
    errors = metric(client, "rakuten_model_requests_total", outcome="error")
    held, rsp = hold(client, "/predict", SINGLE)
    assert rsp.headers["retry-after"] in RETRY_AFTER
    assert rsp.headers["content-type"] == "application/json"
    assert rsp.json() == REFUSAL
    shed = shed_total(client, "/predict")
    assert shed >= shed_single + 1

    # probes, metrics and the batch path are not held by the single limit
    for path in ("/health", "/ready", "/metrics", "/model"):
        assert client.get(path).status_code == 200, path
    batch = client.post("/predict/batch", content=BATCH, headers=JSON)
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 3
    assert client.post("/predict", content=SINGLE, headers=JSON).status_code == 503
    assert shed_total(client, "/predict") == shed + 1

    held_batch, rsp = hold(client, "/predict/batch", BATCH)
    assert rsp.headers["retry-after"] in RETRY_AFTER and rsp.json() == REFUSAL
    assert shed_total(client, "/predict/batch") >= shed_batch + 1
    # a refusal is a 503 of the route, but not an error of the model version
    assert metric(client, "rakuten_http_requests_total", route="/predict/batch", status="503") >= 1
    assert metric(client, "rakuten_model_requests_total", outcome="error") == errors

    # the held requests are answered in full; their slots are free again
    status, body = held.finish()
    assert status == 200 and body["model_version"] == api.version
    status, body = held_batch.finish()
    assert status == 200 and len(body["predictions"]) == 3
    assert client.post("/predict", content=SINGLE, headers=JSON).status_code == 200
    assert client.post("/predict/batch", content=BATCH, headers=JSON).status_code == 200

    # a client that leaves in the middle of its body frees its slot too
    gone, _ = hold(client, "/predict", SINGLE)
    gone.abandon()
    wait_until(
        lambda: client.post("/predict", content=SINGLE, headers=JSON).status_code == 200,
        timeout=10,
        interval=0,
        what="the slot of a client that left freed",
    )


def test_a_refusal_is_one_complete_response_and_the_connection_serves_the_next_request(
    api, client, held, raw
):
    before = refusal_counts(client)
    raw.send(request("POST", "/predict?k=2", SINGLE))
    assert_refusal(raw.response())
    raw.send(request("POST", "/predict", SINGLE))
    assert_refusal(raw.response())
    assert not raw.pending  # nothing after the refusal's body

    # two refusals: counted as shed and as 503s of the route, not timed as served requests
    shed, refused, timed = refusal_counts(client)
    assert (shed - before[0], refused - before[1], timed - before[2]) == (2, 2, 0)

    # once the slot is free, the same connection is served
    assert held.finish()[0] == 200
    raw.send(request("POST", "/predict?k=2", SINGLE))
    rsp = raw.response()
    assert rsp.status == 200 and len(rsp.json()["top_k"]) == 2
    assert rsp.json()["model_version"] == api.version


def test_pipelined_requests_are_answered_in_order(client, held, raw):
    before = refusal_counts(client)
    raw.send(
        request("POST", "/predict", SINGLE)  # refused by the protocol
        + request("GET", "/health")
        # behind /health's answer: refused by the ASGI layer, in their turn
        + request("POST", "/predict", SINGLE)
        + request("POST", "/predict", chunked(SINGLE, 7), "Transfer-Encoding: chunked")
        + request("POST", "/predict/batch", BATCH)  # the batch slot is free
        + request("GET", "/ready")
    )
    answers = [raw.response(method) for method in ("POST", "GET", "POST", "POST", "POST", "GET")]
    assert [a.status for a in answers] == [503, 200, 503, 503, 200, 200], [a.body for a in answers]
    for refused in (answers[0], answers[2], answers[3]):
        assert_refusal(refused)
    assert answers[1].json() == {"status": "ok"}
    assert len(answers[4].json()["predictions"]) == 3
    assert not raw.pending

    # both ways of refusing count the same
    shed, refused, timed = refusal_counts(client)
    assert (shed - before[0], refused - before[1], timed - before[2]) == (3, 3, 0)

    assert held.finish()[0] == 200
    raw.send(request("POST", "/predict", SINGLE) + request("GET", "/health"))
    assert raw.response().status == 200 and raw.response("GET").status == 200


def test_a_refused_request_is_answered_before_its_body_and_its_body_is_skipped(held, raw):
    big = orjson.dumps({**REALISTIC_PRODUCTS[0], "description": "x" * 3_000_000})  # over the body limit
    head, body = request("POST", "/predict", big).split(b"\r\n\r\n", 1)
    raw.send(head + b"\r\n\r\n")
    assert_refusal(raw.response())  # before a byte of the body was sent
    for i in range(0, len(body), 256 * 1024):
        raw.send(body[i : i + 256 * 1024])
    raw.send(request("GET", "/health"))
    assert raw.response("GET").json() == {"status": "ok"}

    # a chunked body, in pieces that split its chunk headers
    raw.send(request("POST", "/predict", b"", "Transfer-Encoding: chunked"))
    assert_refusal(raw.response())
    encoded = chunked(big, 100_000)
    for i in range(0, len(encoded), 65_537):
        raw.send(encoded[i : i + 65_537])
    raw.send(request("GET", "/health"))
    assert raw.response("GET").json() == {"status": "ok"}

    assert held.finish()[0] == 200
    raw.send(request("POST", "/predict", big))
    assert raw.response().status == 413  # admitted now, and read: too large


@pytest.mark.parametrize(
    "headers, version",
    [(("Connection: close",), "1.1"), ((), "1.0"), (("Expect: 100-continue",), "1.1")],
    ids=["connection-close", "http-1.0", "expect-100-continue"],
)
def test_a_refusal_closes_the_connection_when_the_client_may_not_go_on(held, raw, headers, version):
    head, body = request("POST", "/predict", SINGLE, *headers, version=version).split(b"\r\n\r\n", 1)
    raw.send(head + b"\r\n\r\n")
    # no "100 Continue": the final answer comes at once, and says the connection ends
    assert_refusal(raw.response(), close=True)
    raw.send(body)
    raw.sock.settimeout(3)
    assert raw.closed_by_server()


def test_refusals_spread_their_retry_after_so_refused_clients_come_back_apart(client, held, raw):
    """Consecutive refusals alternate ``Retry-After: 1`` and ``2``, in the protocol and in the ASGI
    layer alike: half of a burst refused together comes back a second later than the other half."""
    raw.send(b"".join(request("POST", "/predict", SINGLE) for _ in range(4)))
    by_protocol = [raw.response().headers["retry-after"] for _ in range(4)]
    assert set(by_protocol) == RETRY_AFTER, by_protocol
    assert by_protocol[0::2] != by_protocol[1::2], by_protocol  # in turn
    by_asgi_layer = [
        client.post("/predic%74", content=SINGLE, headers=JSON).headers["retry-after"] for _ in range(4)
    ]
    assert set(by_asgi_layer) == RETRY_AFTER, by_asgi_layer


def test_after_a_refusal_that_closes_no_request_is_processed_and_the_answer_is_not_reset(client, held, raw):
    """A refused ``Expect: 100-continue`` request ends its connection: the refusal says
    ``connection: close``, the requests pipelined behind it are neither processed nor answered
    (the client sends them again elsewhere), and bytes the client still sends are read and dropped
    rather than answered with a reset, so the refusal always reaches it."""
    before = (
        metric(client, "rakuten_http_requests_total", route="/health"),
        metric(client, "rakuten_model_requests_total"),
        shed_total(client, "/predict"),
    )
    raw.send(
        request("POST", "/predict", SINGLE, "Expect: 100-continue")
        + request("GET", "/health")
        + request("POST", "/predict/batch", BATCH)  # its slot is free: it would be predicted
    )
    time.sleep(0.3)  # the server has read it all
    for _ in range(3):  # a pipelining client writes on before it reads
        raw.send(request("GET", "/health"))
        time.sleep(0.1)
    assert_refusal(raw.response(), close=True)
    raw.sock.settimeout(3)
    assert raw.closed_by_server()
    after = (
        metric(client, "rakuten_http_requests_total", route="/health"),
        metric(client, "rakuten_model_requests_total"),
        shed_total(client, "/predict"),
    )
    assert after == (before[0], before[1], before[2] + 1)  # one refusal, nothing else done


def test_only_prediction_posts_are_refused(client, held):
    def status(method: str, path: str, **kwargs) -> int:
        return client.request(method, path, **kwargs).status_code

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert status("GET", "/health") == 200
    assert status("GET", "/ready") == 200
    assert status("GET", "/metrics") == 200
    assert status("GET", "/model") == 200
    assert status("POST", "/admin/reload", headers=admin) == 200
    assert status("POST", "/feedback", json={"items": []}) == 401  # no token: refused by auth only
    assert status("GET", "/predict") == 405
    assert status("POST", "/predictions", content=SINGLE, headers=JSON) == 404
    assert status("POST", "/predict/batch", content=BATCH, headers=JSON) == 200
    # the limited paths, however spelled (a percent-escape is decoded before the ASGI layer checks)
    assert status("POST", "/predict", content=SINGLE, headers=JSON) == 503
    assert status("POST", "/predict?explain=true", content=SINGLE, headers=JSON) == 503
    assert status("POST", "/predic%74", content=SINGLE, headers=JSON) == 503
