"""Admission control over real HTTP: a worker at its in-flight limit refuses prediction requests
with 503, ``Retry-After`` and a JSON error, keeps answering probes and metrics, and admits again
once a slot is free.

The limits are tiny (one single, one batch) and held without timing assumptions: a request whose
body lacks its last byte is admitted and stays in flight until that byte arrives (or its client
leaves). This test's client sends one request at a time, so a 503 it gets proves that the held
request holds the slot; a held request that arrived while the client's was in flight was refused
itself (its answer is waiting on its socket), and is sent again.
"""

from __future__ import annotations

import http.client
import select
import time
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.factories import REALISTIC_PRODUCTS
from tests.support import wait_until

pytestmark = pytest.mark.slow

SINGLE = orjson.dumps(REALISTIC_PRODUCTS[0])
BATCH = orjson.dumps({"items": REALISTIC_PRODUCTS[:3]})
JSON = {"content-type": "application/json"}


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


def test_a_worker_at_its_limit_sheds_with_503_keeps_its_probes_and_recovers(
    registered_model, tmp_path, start_api
):
    api = start_api(
        registered_model,
        f"sqlite:///{tmp_path / 'data.db'}",
        RAKUTEN_MAX_INFLIGHT="1",
        RAKUTEN_MAX_INFLIGHT_BATCHES="1",
    )
    with httpx.Client(base_url=api.url, timeout=10) as client:
        assert shed_total(client, "/predict") == 0 and shed_total(client, "/predict/batch") == 0
        held, rsp = hold(client, "/predict", SINGLE)
        assert rsp.headers["retry-after"] == "1"
        assert rsp.headers["content-type"] == "application/json"
        assert set(rsp.json()) == {"error"} and "retry later" in rsp.json()["error"]
        shed = shed_total(client, "/predict")
        assert shed >= 1

        # probes, metrics and the batch path are not held by the single limit
        for path in ("/health", "/ready", "/metrics", "/model"):
            assert client.get(path).status_code == 200, path
        batch = client.post("/predict/batch", content=BATCH, headers=JSON)
        assert batch.status_code == 200 and len(batch.json()["predictions"]) == 3
        assert client.post("/predict", content=SINGLE, headers=JSON).status_code == 503
        assert shed_total(client, "/predict") == shed + 1

        held_batch, rsp = hold(client, "/predict/batch", BATCH)
        assert rsp.headers["retry-after"] == "1" and "error" in rsp.json()
        assert shed_total(client, "/predict/batch") >= 1
        # a refusal is a 503 of the route, but not an error of the model version
        assert metric(client, "rakuten_http_requests_total", route="/predict", status="503") >= 2
        assert metric(client, "rakuten_model_requests_total", outcome="error") == 0

        # the held requests are answered in full; their slots are free again
        status, body = held.finish()
        assert status == 200 and body["model_version"] == registered_model.versions[0]
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
            interval=0.01,
            what="the slot of a client that left freed",
        )
