"""``decide`` on Postgres and a real MLflow server: each trigger with its numbers, the quiet case,
the JSON Argo reads, the ``model_events`` record, and live accuracy measured by ``data load``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rakuten_mlops.cli import app
from rakuten_mlops.data.generator import generate_frame, write_official_layout
from rakuten_mlops.data.loader import LoadPlan, load_next_batch
from rakuten_mlops.data.status import backlog_since
from rakuten_mlops.monitoring.decision import decide
from rakuten_mlops.monitoring.drift import run_drift_check
from rakuten_mlops.monitoring.reference import model_outputs
from tests.monitoring.factories import log_predictions
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
REPO = Path(__file__).resolve().parents[2]


def _backlog(platform) -> int:
    return backlog_since(platform.settings, [int(b) for b in _lineage(platform)])


def _lineage(platform) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(platform.settings.mlflow_tracking_uri)
    mv = client.get_model_version(platform.settings.registered_model, platform.version)
    return [b for b in mv.tags["batch_ids"].split(",") if b]


def _events(platform):
    from sqlalchemy import select

    from rakuten_mlops.db import session_scope
    from rakuten_mlops.db.models import ModelEvent

    with session_scope(platform.settings.database_url) as session:
        query = select(ModelEvent).where(ModelEvent.event_type == "retrain_decision").order_by(ModelEvent.id)
        return session.scalars(query).all()


def test_no_trigger_means_keep_and_is_recorded(fresh):
    settings = fresh.settings.model_copy(update={"retrain_backlog": _backlog(fresh) + 1_000})
    decision = decide(settings)
    assert decision.retrain is False and decision.reasons == []
    assert decision.checks["backlog"]["triggered"] is False
    assert "no labelled batch evaluated" in decision.checks["live_f1"]["note"]
    (event,) = _events(fresh)
    assert (event.decision, event.version, event.reason) == ("keep", fresh.version, "no trigger fired")


def test_data_load_measures_live_f1_and_a_low_f1_triggers_retraining(fresh, cli_env, tmp_path):
    frame = generate_frame(400, seed=77)
    frame["prdtypecode"] = np.random.default_rng(0).permutation(
        frame["prdtypecode"].to_numpy()
    )  # labels disagree
    write_official_layout(frame, tmp_path / "relabelled")
    load = CliRunner().invoke(
        app, ["data", "load", "--source", str(tmp_path / "relabelled"), "--initial-fraction", "1"]
    )
    assert load.exit_code == 0, load.output
    assert f"live accuracy of production model version {fresh.version}" in load.output
    settings = fresh.settings.model_copy(update={"retrain_backlog": _backlog(fresh) + 1_000})
    decision = decide(settings)
    live = decision.checks["live_f1"]
    assert decision.retrain is True and live["triggered"] is True and live["value"] < 0.70
    assert live["n_rows"] == 400
    assert any("live weighted F1" in r and "RAKUTEN_RETRAIN_F1=0.70" in r for r in decision.reasons)
    assert _events(fresh)[-1].decision == "retrain"


def test_a_good_new_batch_gives_a_live_f1_that_does_not_trigger(fresh, cli_env):
    load = CliRunner().invoke(app, ["data", "load", "--source", str(fresh.source), "--batch-rows", "500"])
    assert load.exit_code == 0, load.output
    assert "live accuracy" in load.output
    settings = fresh.settings.model_copy(update={"retrain_backlog": _backlog(fresh) + 1_000})
    live = decide(settings).checks["live_f1"]
    assert live["value"] >= 0.70 and live["triggered"] is False


def test_backlog_since_training_triggers_at_the_threshold(fresh):
    load_next_batch(fresh.settings, fresh.source, LoadPlan(batch_rows=300))
    backlog = _backlog(fresh)
    assert backlog >= 300
    at = decide(fresh.settings.model_copy(update={"retrain_backlog": backlog}))
    assert at.retrain is True and at.checks["backlog"]["value"] == backlog
    assert any(f"{backlog:,} labelled rows loaded since" in r for r in at.reasons)
    below = decide(fresh.settings.model_copy(update={"retrain_backlog": backlog + 1}))
    assert below.retrain is False


def test_high_drift_triggers_retraining(fresh):
    outputs = model_outputs(fresh.pipeline, generate_frame(1200, seed=21, drift="length", drift_strength=0.5))
    log_predictions(fresh.settings.database_url, outputs, fresh.version)
    assert run_drift_check(fresh.settings, "7d").severity == "high"
    settings = fresh.settings.model_copy(update={"retrain_backlog": _backlog(fresh) + 1_000})
    decision = decide(settings)
    assert decision.retrain is True and decision.checks["drift"]["value"] == "high"
    assert any("drift severity high" in r and "text_length" in r for r in decision.reasons)


def test_no_production_model_means_retrain(fresh):
    decision = decide(fresh.settings.model_copy(update={"registered_model": "rakuten_never_registered"}))
    assert decision.retrain is True and decision.production_version is None
    assert "no production model yet" in decision.reasons[0]


def test_cli_decide_output_is_what_the_argo_workflow_reads(fresh, cli_env, monkeypatch, tmp_path):
    outputs = model_outputs(
        fresh.pipeline, generate_frame(1200, seed=22, drift="vocabulary", drift_strength=0.5)
    )
    log_predictions(fresh.settings.database_url, outputs, fresh.version)
    runner = CliRunner()
    assert runner.invoke(app, ["drift"]).exit_code == 0
    monkeypatch.setenv("RAKUTEN_RETRAIN_BACKLOG", str(_backlog(fresh) + 1_000))
    from rakuten_mlops.settings import get_settings

    get_settings.cache_clear()
    output = tmp_path / "tmp" / "decision.json"
    human = runner.invoke(app, ["decide", "--output", str(output)])
    assert human.exit_code == 0, human.output
    assert "decision: RETRAIN" in human.output and "check drift: high" in human.output
    written = json.loads(output.read_text())
    assert written["retrain"] is True and written["reasons"]
    machine = runner.invoke(app, ["decide", "--json"])
    assert json.loads(machine.stdout)["retrain"] is True

    sys.path.insert(0, str(REPO))
    try:
        from workflows.drift_check import WHEN_RETRAIN
        from workflows.local_executor import substitute
    finally:
        sys.path.remove(str(REPO))
    scope = {"tasks.decide.outputs.parameters.decision": output.read_text().rstrip("\n")}
    assert substitute(WHEN_RETRAIN, scope) == "true"


def test_data_load_succeeds_with_a_warning_when_the_registry_is_down(
    platform, cli_env, monkeypatch, tmp_path
):
    from rakuten_mlops.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    write_official_layout(generate_frame(200, seed=88), tmp_path / "more")
    load = CliRunner().invoke(
        app, ["data", "load", "--source", str(tmp_path / "more"), "--initial-fraction", "1"]
    )
    assert load.exit_code == 0, load.output
    assert "loaded batch" in load.output and "warning: live accuracy not measured" in load.output
