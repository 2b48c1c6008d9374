"""End to end over HTTP: a drifted batch sent to the real API (``rakuten-mlops serve``) lands in
the prediction log; ``drift`` finds it, ``decide`` says retrain, and the API's ``/metrics``
exports the report's scores and severity."""

from __future__ import annotations

import json

import httpx
import pytest

from rakuten_mlops.data.generator import generate_frame
from tests.support import CLI, ManagedProcess, free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.e2e]


def _prediction_count(database_url: str) -> int:
    from sqlalchemy import func, select

    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import Prediction

    with engine_for(database_url).connect() as conn:
        return conn.execute(select(func.count()).select_from(Prediction)).scalar_one()


@pytest.fixture
def api(fresh, tmp_path):
    port = free_port()
    env = {**fresh.env(), "RAKUTEN_MODEL_POLL_SECONDS": "0"}
    cmd = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = ManagedProcess(
        "rakuten-mlops serve", cmd, tmp_path / "api.log", env=env, ready_url=f"http://127.0.0.1:{port}/ready"
    ).start(timeout=180)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_a_drifted_batch_through_the_api_is_detected_and_triggers_retraining(
    fresh, api, cli_env, tmp_path, monkeypatch
):
    frame = generate_frame(1500, seed=31, drift="length", drift_strength=0.5)
    items = [
        {"designation": d, "description": x}
        for d, x in zip(frame.designation, frame.description, strict=True)
    ]
    with httpx.Client(base_url=api, timeout=120) as client:
        for start in range(0, len(items), 500):
            response = client.post("/predict/batch", json={"items": items[start : start + 500]})
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == fresh.version
    url = fresh.settings.database_url
    wait_until(lambda: _prediction_count(url) >= len(items), timeout=60, what="the prediction log")
    assert _prediction_count(url) == len(items)

    from typer.testing import CliRunner

    from rakuten_mlops.cli import app
    from rakuten_mlops.settings import get_settings

    runner = CliRunner()
    drift = runner.invoke(app, ["drift", "--window", "1h", "--json"])
    assert drift.exit_code == 0, drift.output
    summary = json.loads(drift.stdout)
    assert summary["n_current"] == 1500 and summary["severity"] == "high"
    assert {"text_length", "word_count"} <= set(summary["drifted_features"])

    monkeypatch.setenv("RAKUTEN_RETRAIN_BACKLOG", "1000000")
    get_settings.cache_clear()
    decision_file = tmp_path / "decision.json"
    decided = runner.invoke(app, ["decide", "--output", str(decision_file)])
    assert decided.exit_code == 0, decided.output
    decision = json.loads(decision_file.read_text())
    assert decision["retrain"] is True and "drift severity high" in decision["reasons"][0]

    metrics = httpx.get(f"{api}/metrics", timeout=30).text
    assert "rakuten_drift_severity 3.0" in metrics
    ks = next(t for t in summary["tests"] if (t["feature"], t["test"]) == ("text_length", "ks"))
    exported = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("rakuten_drift_score{")
    }
    label = next(k for k in exported if 'feature="text_length"' in k and 'test="ks"' in k)
    assert exported[label] == pytest.approx(ks["score"], rel=1e-6)
