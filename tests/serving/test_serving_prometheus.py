"""A real Prometheus scrapes `/metrics` of the API running with two workers (multiprocess metrics),
the per-product histograms included."""

from __future__ import annotations

import re
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
    confidences = batch_confidences(api.url)
    prometheus_url = prometheus(api.port)
    expr = 'sum(rakuten_http_requests_total{route="/predict",method="POST",status="200"})'
    deadline = time.monotonic() + 30
    value = None
    while time.monotonic() < deadline and value != sent:
        value = query(prometheus_url, expr)
        time.sleep(0.5)
    assert value == sent
    assert query(prometheus_url, 'sum(rakuten_http_requests_total{route="/predict",status="422"})') == 1
    assert query(prometheus_url, "sum(rakuten_predictions_total)") == sent + len(confidences)
    assert query(prometheus_url, "rakuten_model_loaded") == 1
    assert query(prometheus_url, f'rakuten_model_info{{version="{registered_model.versions[0]}"}}') == 1
    assert (
        query(prometheus_url, 'sum(rakuten_http_request_duration_seconds_count{route="/predict"})')
        == sent + 1
    )
    # the per-product histograms, counted per request batch in each worker, merged at the scrape
    sent_products = sent + len(confidences)
    assert query(prometheus_url, "sum(rakuten_prediction_confidence_count)") == sent_products
    assert query(prometheus_url, 'sum(rakuten_prediction_confidence_bucket{le="+Inf"})') == sent_products
    assert query(prometheus_url, "sum(rakuten_input_length_chars_count)") == sent_products
    assert (
        query(prometheus_url, "histogram_quantile(0.5, sum by (le) (rakuten_input_length_chars_bucket))") > 0
    )
    text = httpx.get(f"{api.url}/metrics", timeout=10).text
    assert "# TYPE rakuten_prediction_confidence histogram" in text and "_parts" not in text
    below_half = float(
        re.search(r'^rakuten_prediction_confidence_bucket\{le="0.5"\} (\S+)$', text, re.M).group(1)
    )
    assert below_half >= sum(c <= 0.5 for c in confidences)  # the singles add theirs


def batch_confidences(api_url: str) -> list[float]:
    """Batches of 1 to 41 products, each on a fresh connection (either worker answers); the
    confidences they returned."""
    confidences = []
    for i in range(9):
        products = [REALISTIC_PRODUCTS[(i + j) % len(REALISTIC_PRODUCTS)] for j in range(1 + 20 * (i % 3))]
        with httpx.Client(base_url=api_url, timeout=30) as client:
            response = client.post("/predict/batch", json={"items": products})
        assert response.status_code == 200, response.text
        confidences += [p["confidence"] for p in response.json()["predictions"]]
    return confidences
