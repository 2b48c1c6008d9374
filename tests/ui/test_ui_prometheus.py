"""The control room with a real Prometheus scraping the real API: green health, served model, panels."""

from __future__ import annotations

import time

import httpx

from tests.ui.apptest import health_line, metrics, open_app


def test_prometheus_is_green_and_shows_what_the_api_serves(prometheus_env, api):
    assert health_line(open_app(), "Prometheus")[0] == "ok"
    for _ in range(5):  # traffic for the request-rate panel
        httpx.post(f"{api.url}/predict", json={"designation": "Coussin décoratif en velours 45x45 cm"})
    time.sleep(2.5)
    at = open_app("monitoring")
    served = httpx.get(f"{api.url}/model").json()["version"]
    table = at.main.dataframe[-1].value
    assert list(table["version"]) == [served]
    assert list(table["name"]) == ["rakuten_classifier"]
    shown = metrics(at)
    assert shown["Requests per second (5m)"] != "no data"
    assert float(shown["Requests per second (5m)"]) > 0
    assert "Drift severity (0-3)" in shown
