"""The control room with a real Prometheus scraping the real API: green health, served model, panels."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import httpx
import pytest
from ui_helpers import free_port, health_line, metrics, open_app

from conftest import _stop, _wait_until


@pytest.fixture(scope="module")
def prometheus(api, tmp_path_factory):
    """Debian's ``prometheus`` on a free port, scraping the API every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(
                "Debian's prometheus is not installed (.ci/setup.d installs it): under CI this test must run"
            )
        pytest.skip("Debian's prometheus is not installed (.ci/setup.d installs it)")
    folder = tmp_path_factory.mktemp("ui-prometheus")
    target = api.url.removeprefix("http://")
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: rakuten-api\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(
            lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, 60, "Prometheus", process
        )

        def scraped() -> bool:
            body = httpx.get(f"{url}/api/v1/query", params={"query": "rakuten_model_info"}, timeout=2).json()
            return bool(body["data"]["result"])

        _wait_until(scraped, 60, "the first scrape of the API", process)
        yield url
    finally:
        _stop(process)
        log.close()


@pytest.fixture
def prometheus_env(api_env, prometheus, monkeypatch):
    from rakuten_mlops.settings import get_settings

    monkeypatch.setenv("RAKUTEN_PROMETHEUS_URL", prometheus)
    get_settings.cache_clear()
    return api_env


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
