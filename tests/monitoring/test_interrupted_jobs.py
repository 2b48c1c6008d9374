"""A job stopped between its steps leaves no result a reader takes for complete (Postgres, the
session's MLflow server, the monitoring session's trained model).

Each test makes the step that follows the visible work fail (the database row of a drift check
or an estimate, the ``trained`` row of a training, the alias move of a promotion): what was
written before it must read as unfinished, never as a finished report or decision. The SIGKILL
scenario of tests/chaos/test_job_kills.py kills the real commands at random points; these pin the
order of the steps at the points that matter."""

from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient

from rakuten_mlops.data.generator import generate_frame
from rakuten_mlops.monitoring.reference import model_outputs
from tests.monitoring.factories import log_predictions

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


class Stopped(Exception):
    """Stands for the job dying at this step."""


def _stop(*_args, **_kwargs):
    raise Stopped


def _own(settings, **names):
    """The settings with experiment and model names of this test's own."""
    tag = uuid.uuid4().hex[:8]
    return settings.model_copy(update={key: f"{value}_{tag}" for key, value in names.items()})


def _runs(settings, experiment: str):
    client = MlflowClient(settings.mlflow_tracking_uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_a_drift_check_stopped_before_its_row_leaves_no_report_folder_and_no_finished_run(
    fresh, monkeypatch, tmp_path
):
    from rakuten_mlops.monitoring import drift

    settings = _own(fresh.settings, drift_experiment="interrupted_drift").model_copy(
        update={"home": tmp_path / "home"}
    )
    log_predictions(
        settings.database_url, model_outputs(fresh.pipeline, generate_frame(400, seed=21)), fresh.version
    )
    monkeypatch.setattr(drift, "_record", _stop)
    with pytest.raises(Stopped):
        drift.run_drift_check(settings, "1d")
    assert drift.latest_report(settings) is None
    folder = settings.reports_dir / "drift"
    assert not folder.exists() or not list(folder.iterdir())  # neither the staging nor a final folder
    (run,) = _runs(settings, settings.drift_experiment)
    assert run.info.status != "FINISHED"

    monkeypatch.undo()
    summary = drift.run_drift_check(settings, "1d").summary  # the next check records a whole report
    assert [p.name for p in folder.iterdir()] == [summary["json_path"].split("/")[-2]]
    row = drift.latest_report(settings)
    assert row.mlflow_run_id == summary["mlflow_run_id"]
    finished = MlflowClient(settings.mlflow_tracking_uri).get_run(row.mlflow_run_id)
    assert finished.info.status == "FINISHED"


def test_an_estimate_stopped_before_its_rows_leaves_no_finished_run(fresh, monkeypatch):
    from rakuten_mlops.monitoring import estimate

    settings = _own(fresh.settings, estimate_experiment="interrupted_estimate")
    monkeypatch.setattr(estimate, "_record", _stop)
    with pytest.raises(Stopped):
        estimate.run_estimate(settings, "1d")
    (run,) = _runs(settings, settings.estimate_experiment)
    assert run.info.status != "FINISHED"
    assert estimate.latest_estimate(settings, fresh.version) is None or (
        estimate.latest_estimate(settings, fresh.version).mlflow_run_id != run.info.run_id
    )


def test_a_training_stopped_after_registering_leaves_a_whole_version_and_a_gate_stopped_before_the_move_no_promoted_tag(
    fresh, monkeypatch
):
    from rakuten_mlops.db.models import ModelEvent
    from rakuten_mlops.doctor import VERSION_TAGS
    from rakuten_mlops.registry import AliasTransaction, ModelRegistry
    from rakuten_mlops.training import train
    from rakuten_mlops.training.registry import promote

    settings = _own(
        fresh.settings, registered_model="interrupted", training_experiment="interrupted_training"
    )
    settings = settings.model_copy(update={"min_f1": 0.0, "max_ece": 1.0})
    with monkeypatch.context() as patch:
        patch.setattr(train, "_record_trained", _stop)
        with pytest.raises(Stopped):
            train.run_training(settings, promote=True)
    registry = ModelRegistry(settings)
    (version,) = registry.versions()  # registered with every tag in the same call
    assert all(version.tags.get(tag) for tag in VERSION_TAGS), version.tags
    (run,) = _runs(settings, settings.training_experiment)
    assert run.info.status != "FINISHED"  # the run ends only once the version is recorded

    monkeypatch.setattr(AliasTransaction, "move", _stop)
    with pytest.raises(Stopped):
        promote(settings, version.version)
    assert registry.production_version() is None
    assert registry.version(version.version).tags["gate_decision"] == "registered"
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for

    with engine_for(settings.database_url).connect() as conn:
        rows = conn.execute(
            select(ModelEvent.event_type).where(ModelEvent.model_name == settings.registered_model)
        ).all()
    assert ("promoted",) not in rows  # rolled back with the failed move
