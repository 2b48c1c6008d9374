"""End to end in a real headless browser: `rakuten-mlops ui` backed by a running API with a
trained production model. Opens every page, classifies a product through the form, and
leaves screenshots in test-artifacts/ui/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import REPO, ManagedProcess, free_port
from tests.ui.apptest import log_predictions

ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = {  # sidebar label -> (text near the top, text at the bottom, charts on the page)
    "Data": ("Rows per class", "Load the next batch", 1),
    "Training": ("Registered versions", "Model events", 2),
    "Predict": ("Recent predictions", "Recent predictions", 0),
    "Monitoring": ("Latest drift check", "Live F1 per model version", 2),
}


def _chromium_or_skip() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"Debian chromium is not installed ({CHROMIUM}); run `bash .ci/setup.d/50-ui.sh`"
    if os.environ.get("CI"):
        pytest.fail(f"under CI the browser test must run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def ui_server(api, tmp_path):
    """`rakuten-mlops ui` on a free port, over the API's database and pointed at the API."""
    from rakuten_mlops.monitoring.decision import decide
    from rakuten_mlops.monitoring.drift import run_drift_check
    from rakuten_mlops.settings import Settings

    settings = Settings(home=api.home, database_url=None, mlflow_tracking_uri=None)
    log_predictions(settings, 2, "1")  # a real drift check with a real Evidently report
    run_drift_check(settings, "7d")
    decide(settings, actor="ui-tests")
    url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MLFLOW_"))}
    env.update(RAKUTEN_HOME=str(api.home), RAKUTEN_API_URL=api.url)
    process = ManagedProcess(
        "rakuten-mlops ui",
        [
            sys.executable,
            "-m",
            "rakuten_mlops.cli",
            "ui",
            "--port",
            url.rsplit(":", 1)[1],
            "--host",
            "127.0.0.1",
        ],
        tmp_path / "ui.log",
        env=env,
        inherit_env=False,
        ready_url=f"{url}/_stcore/health",
        ready=lambda r: r.text == "ok",
    )
    try:
        process.start(timeout=60)
        yield url
    finally:
        process.stop()


def _settle(page) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_control_room_in_headless_chromium(ui_server, api):
    chromium = _chromium_or_skip()
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(ui_server)
            expect(page.get_by_role("heading", name="Control room")).to_be_visible(timeout=90_000)
            served = httpx.get(f"{api.url}/model").json()["version"]
            expect(page.get_by_text(f"ready, serving version {served}")).to_be_visible(timeout=60_000)
            # exact: the MLflow health line can mention the production version too
            expect(page.get_by_text("Production version", exact=True)).to_be_visible(timeout=60_000)
            _settle(page)
            page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

            page.set_viewport_size({"width": 1440, "height": 2000})  # room for the longer pages
            nav = page.get_by_test_id("stSidebarNav")
            for label, (top, bottom, n_charts) in PAGES.items():
                nav.get_by_text(label, exact=True).click()
                expect(page.get_by_role("heading", name=label, exact=True)).to_be_visible(timeout=60_000)
                expect(page.get_by_text(top, exact=True)).to_be_visible(timeout=60_000)
                expect(page.get_by_text(bottom, exact=True)).to_be_visible(timeout=60_000)
                _settle(page)
                charts = page.get_by_test_id("stVegaLiteChart")
                expect(charts).to_have_count(n_charts, timeout=30_000)
                for i in range(n_charts):
                    expect(charts.nth(i).locator("canvas, svg").first).to_be_visible(timeout=30_000)
                page.wait_for_timeout(800)  # let the charts finish drawing
                page.screenshot(path=str(ARTIFACTS / f"{label.lower()}.png"), full_page=True)

            nav.get_by_text("Predict", exact=True).click()
            page.get_by_label("Designation (product title)").fill("Figurine Dragon Ball Z Son Goku 18 cm")
            page.get_by_label("Description").fill("Figurine de collection en PVC, boîte d'origine.")
            page.get_by_role("button", name="Classify").click()
            result = page.get_by_text("Category:")
            expect(result).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Confidence")).to_be_visible()
            expect(page.get_by_text(f"v{served}", exact=True)).to_be_visible()
            assert "prdtypecode" in result.inner_text()
            _settle(page)
            page.screenshot(path=str(ARTIFACTS / "predict-result.png"), full_page=True)
        finally:
            browser.close()
    shots = sorted(p.name for p in ARTIFACTS.glob("*.png"))
    assert {
        "overview.png",
        "data.png",
        "training.png",
        "predict.png",
        "monitoring.png",
        "predict-result.png",
    } <= set(shots)
