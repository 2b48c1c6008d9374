"""A real Prometheus scrapes `/metrics` of the API running with two workers (multiprocess metrics)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.serving.factories import REALISTIC_PRODUCTS
from tests.support import wait_http
from tests.support.prometheus import prometheus_binary, start_prometheus

pytestmark = pytest.mark.slow


@pytest.fixture
def prometheus(tmp_path):
    prometheus_binary()
    started = []

    def start(target_port: int) -> str:
        process, url = start_prometheus(tmp_path, f"127.0.0.1:{target_port}", timeout=30)
        started.append(process)
        return url

    yield start
    for process in started:
        process.stop()


def query(prometheus_url: str, expr: str) -> float | None:
    result = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=5).json()["data"][
        "result"
    ]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_request_counts_from_all_workers(
    registered_model, tmp_path, start_api, prometheus
):
    api = start_api(
        registered_model, f"sqlite:///{tmp_path / 'data.db'}", workers=2, RAKUTEN_MODEL_POLL_SECONDS=0
    )
    # both workers must have loaded the model before the load below can reach either of them
    wait_http(f"{api.url}/metrics", 60, ok=lambda r: "rakuten_model_loaded 1.0" in r.text)
    sent = 40
    with httpx.Client(base_url=api.url, timeout=10) as client:
        for i in range(sent):
            assert (
                client.post("/predict", json=REALISTIC_PRODUCTS[i % len(REALISTIC_PRODUCTS)]).status_code
                == 200
            )
        assert client.post("/predict", json={"designation": ""}).status_code == 422
    prometheus_url = prometheus(api.port)
    expr = 'sum(rakuten_http_requests_total{route="/predict",method="POST",status="200"})'
    deadline = time.monotonic() + 30
    value = None
    while time.monotonic() < deadline and value != sent:
        value = query(prometheus_url, expr)
        time.sleep(0.5)
    assert value == sent
    assert query(prometheus_url, 'sum(rakuten_http_requests_total{route="/predict",status="422"})') == 1
    assert query(prometheus_url, "sum(rakuten_predictions_total)") == sent
    assert query(prometheus_url, "rakuten_model_loaded") == 1
    assert query(prometheus_url, f'rakuten_model_info{{version="{registered_model.versions[0]}"}}') == 1
    assert (
        query(prometheus_url, 'sum(rakuten_http_request_duration_seconds_count{route="/predict"})')
        == sent + 1
    )
