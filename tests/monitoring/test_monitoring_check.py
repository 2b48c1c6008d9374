"""The drift check end to end on Postgres and a real MLflow server: prediction log -> Evidently
report and JSON summary on disk, MLflow run with the same files, ``drift_reports`` row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rakuten_mlops.data.generator import generate_frame
from rakuten_mlops.monitoring.drift import latest_report, run_drift_check
from rakuten_mlops.monitoring.reference import model_outputs
from tests.monitoring.factories import log_predictions

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _log(platform, rows, seed, drift=None, created_at=None, version=None):
    outputs = model_outputs(
        platform.pipeline, generate_frame(rows, seed=seed, drift=drift, drift_strength=0.5)
    )
    return log_predictions(platform.settings.database_url, outputs, version or platform.version, created_at)


def test_vocabulary_drift_is_reported_in_html_json_mlflow_and_the_database(fresh):
    _log(fresh, 1500, seed=11, drift="vocabulary")
    check = run_drift_check(fresh.settings, "7d")
    summary = check.summary
    assert summary["severity"] == "high" and summary["drifted"] is True
    assert "oov_rate" in summary["drifted_features"]
    assert (summary["n_current"], summary["model_version"]) == (1500, fresh.version)
    # the layout the API turns into rakuten_drift_score{feature,test} and rakuten_drift_severity
    oov = next(t for t in summary["tests"] if (t["feature"], t["test"]) == ("oov_rate", "ks"))
    assert oov["drifted"] is True and oov["score"] < oov["threshold"] and oov["current"] > oov["reference"]
    assert {t["feature"] for t in summary["tests"]} == {
        "text_length", "word_count", "description_empty", "predicted_class", "confidence", "oov_rate",
    }  # fmt: skip
    # files under $RAKUTEN_HOME/reports/drift/<timestamp>/
    html, saved = Path(summary["html_path"]), json.loads(Path(summary["json_path"]).read_text())
    assert html.parent.parent == fresh.settings.reports_dir / "drift"
    assert "oov_rate" in html.read_text() and saved["severity"] == "high"
    # the database row
    row = latest_report(fresh.settings, fresh.version)
    assert (row.severity, row.drifted, row.n_current, row.mlflow_run_id) == (
        "high",
        True,
        1500,
        summary["mlflow_run_id"],
    )
    assert row.summary["tests"] == summary["tests"]
    # the MLflow run in experiment rakuten_drift, with both files as artifacts
    from mlflow import MlflowClient

    client = MlflowClient(fresh.settings.mlflow_tracking_uri)
    run = client.get_run(summary["mlflow_run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "rakuten_drift"
    assert run.data.tags["severity"] == "high" and run.data.metrics["severity_level"] == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "drift_report")}
    assert {"drift_report/report.html", "drift_report/summary.json"} <= artifacts


def test_the_window_decides_which_predictions_count(fresh):
    now = datetime.now(UTC)
    _log(fresh, 1200, seed=12, drift="length", created_at=now - timedelta(days=10))
    _log(fresh, 1200, seed=13, created_at=now - timedelta(hours=1))
    recent = run_drift_check(fresh.settings, "7d", now=now).summary
    assert (recent["n_current"], recent["severity"]) == (1200, "none")
    month = run_drift_check(fresh.settings, "30d", now=now).summary
    assert month["n_current"] == 2400 and "text_length" in month["drifted_features"]


def test_a_small_window_says_not_enough_data_and_records_severity_none(fresh):
    _log(fresh, 120, seed=14, drift="length")
    summary = run_drift_check(fresh.settings, "7d").summary
    assert (summary["status"], summary["severity"], summary["tests"]) == ("not_enough_data", "none", [])
    assert "not enough data" in summary["message"] and summary["html_path"] is None
    assert latest_report(fresh.settings).severity == "none"


def test_predictions_of_another_model_version_only_count_for_the_input_features(fresh):
    _log(fresh, 800, seed=15, version="999")
    summary = run_drift_check(fresh.settings, "7d").summary
    assert summary["n_current"] == 800 and summary["n_current_model"] == 0
    assert {s["feature"] for s in summary["skipped"]} == {"predicted_class", "confidence", "oov_rate"}


def test_cli_drift_prints_severity_and_report_and_writes_json(fresh, cli_env, tmp_path):
    from typer.testing import CliRunner

    from rakuten_mlops.cli import app

    _log(fresh, 1000, seed=16, drift="length")
    output = tmp_path / "out" / "drift.json"
    runner = CliRunner()
    human = runner.invoke(app, ["drift", "--window", "7d", "--output", str(output)])
    assert human.exit_code == 0, human.output
    assert "severity: high" in human.output and "HTML report:" in human.output
    written = json.loads(output.read_text())
    assert written["severity"] == "high" and "text_length" in written["drifted_features"]
    machine = runner.invoke(app, ["drift", "--json"])
    assert machine.exit_code == 0
    assert json.loads(machine.stdout)["severity"] == "high"
    bad = runner.invoke(app, ["drift", "--window", "seven days"])
    assert bad.exit_code == 2 and "like 7d" in bad.output
