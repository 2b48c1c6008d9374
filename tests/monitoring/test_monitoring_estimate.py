"""``rakuten-mlops estimate`` on Postgres and a real MLflow server, with the session's trained and
promoted model: the estimate beside the realized F1 of labelled predictions, the trust flag under
vocabulary drift, the ``decide`` trigger, the stored rows, the MLflow run and the API's gauges;
and what training recorded about calibration."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rakuten_mlops.cli import app
from rakuten_mlops.data.generator import generate_frame
from rakuten_mlops.monitoring.decision import decide
from rakuten_mlops.monitoring.estimate import run_estimate
from tests.training.factories import insert_products

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
WINDOW_ROWS = 1500
_next_productid = iter(range(3_000_000_000, 4_000_000_000, 10_000_000))


def log_window(platform, frame, *, labelled: bool, when: datetime | None = None) -> None:
    """The API's prediction-log rows for ``frame`` (probabilities included); ``labelled`` also
    loads the products with their true class, as a later labelled load would."""
    from sqlalchemy import insert

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction
    from rakuten_mlops.model.features import prediction_features
    from rakuten_mlops.model.probabilities import encode
    from rakuten_mlops.model.runner import top_k

    url = platform.settings.database_url
    upgrade(url)
    inputs = frame[["designation", "description"]]
    proba = np.asarray(platform.pipeline.predict_proba(inputs))
    top, top_p = top_k(proba, 5)
    codes = np.asarray(platform.pipeline.classes_)[top]
    features = prediction_features(platform.pipeline, inputs)
    at = when or datetime.now(UTC) - timedelta(minutes=5)
    rows = [
        {
            "prediction_id": str(uuid.uuid4()), "created_at": at, "model_version": platform.version,
            "prdtypecode": int(c[0]), "confidence": float(p[0]), "text_length": int(f.text_length),
            "word_count": int(f.word_count), "description_empty": bool(f.description_empty),
            "oov_rate": float(f.oov_rate), "productid": int(pid),
            "probabilities": encode(c.tolist(), p.tolist()),
        }
        for c, p, f, pid in zip(codes, top_p, features.itertuples(), frame["productid"], strict=True)
    ]  # fmt: skip
    with engine_for(url).begin() as conn:
        conn.execute(insert(Prediction.__table__), rows)
    if labelled:
        insert_products(url, frame)


def window(seed: int, **drift) -> pd.DataFrame:
    return generate_frame(WINDOW_ROWS, seed, first_productid=next(_next_productid), **drift)


def test_estimate_json_gives_estimate_interval_and_realized_f1_and_records_them(fresh, cli_env):
    from mlflow import MlflowClient
    from sqlalchemy import select

    from rakuten_mlops.db import session_scope
    from rakuten_mlops.db.models import PerformanceEstimate

    log_window(fresh, window(41), labelled=True)
    result = CliRunner().invoke(app, ["estimate", "--window", "1d", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (
        out["model_version"] == fresh.version and out["n"] == WINDOW_ROWS and out["n_labelled"] == WINDOW_ROWS
    )
    low, high = out["interval"]
    assert low < out["f1_weighted"] < high
    assert out["trusted"] is True, out["untrusted_reasons"]
    assert abs(out["f1_weighted"] - out["realized_f1_weighted"]) <= 0.05, out
    assert low <= out["realized_f1_weighted"] <= high
    assert {"f1_macro", "accuracy", "intervals", "per_class", "trust_checks"} <= set(out)
    assert {c["prdtypecode"] for c in out["per_class"]} and all("interval" in c for c in out["per_class"])
    with session_scope(fresh.settings.database_url) as session:
        (row,) = session.scalars(select(PerformanceEstimate)).all()
        assert (row.model_version, row.n, row.trusted) == (fresh.version, WINDOW_ROWS, True)
        assert row.realized_f1_weighted == pytest.approx(out["realized_f1_weighted"])
    run = MlflowClient(fresh.settings.mlflow_tracking_uri).get_run(out["mlflow_run_id"])
    assert run.data.metrics["f1_weighted"] == pytest.approx(out["f1_weighted"])
    assert run.data.tags["model_version"] == fresh.version


def test_realized_f1_also_comes_from_feedback_labels(fresh):
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import Prediction
    from rakuten_mlops.monitoring.feedback import LabelIn, store_labels
    from rakuten_mlops.monitoring.performance import realized

    frame = window(46)
    log_window(fresh, frame, labelled=False)
    truth = dict(zip(frame["productid"].tolist(), frame["prdtypecode"].tolist(), strict=True))
    with engine_for(fresh.settings.database_url).connect() as conn:
        logged = conn.execute(
            select(Prediction.prediction_id, Prediction.productid, Prediction.prdtypecode)
        ).all()
    some = logged[:300]
    store_labels(
        fresh.settings.database_url,
        [LabelIn(prdtypecode=truth[pid], source="tests", prediction_id=p) for p, pid, _ in some],
    )
    summary = run_estimate(fresh.settings, "1d", record=False).summary
    assert summary["n"] == WINDOW_ROWS and summary["n_labelled"] == 300
    expected = realized([truth[pid] for _, pid, _ in some], [code for _, _, code in some])["f1_weighted"]
    assert summary["realized_f1_weighted"] == pytest.approx(expected)


def test_vocabulary_drift_is_flagged_and_never_triggers_retraining(fresh):
    log_window(fresh, window(42, drift="vocabulary", drift_strength=1.0), labelled=False)
    summary = run_estimate(fresh.settings, "1d").summary
    assert summary["trusted"] is False
    assert any("out-of-vocabulary" in r for r in summary["untrusted_reasons"]), summary["untrusted_reasons"]
    assert summary["realized_f1_weighted"] is None and summary["n_labelled"] == 0
    settings = fresh.settings.model_copy(update={"retrain_f1": 0.99, "retrain_backlog": 10**9})
    check = decide(settings).checks["estimated_f1"]
    assert check["triggered"] is False and check["trusted"] is False
    assert "not trusted" in check["note"] and "out-of-vocabulary" in check["note"]


def test_a_trusted_estimate_below_the_bar_triggers_retraining_with_interval_and_window(fresh):
    log_window(fresh, window(43), labelled=False)
    summary = run_estimate(fresh.settings, "1d").summary
    assert summary["trusted"] is True
    settings = fresh.settings.model_copy(update={"retrain_f1": 0.99, "retrain_backlog": 10**9})
    decision = decide(settings)
    assert decision.retrain is True and decision.checks["estimated_f1"]["triggered"] is True
    (reason,) = [r for r in decision.reasons if r.startswith("estimated weighted F1")]
    low, high = summary["interval"]
    assert f"{summary['f1_weighted']:.4f}" in reason and f"90% interval {low:.4f}-{high:.4f}" in reason
    assert "1d window" in reason and f"{WINDOW_ROWS:,} predictions" in reason
    assert "below RAKUTEN_RETRAIN_F1=0.99" in reason
    keep = decide(fresh.settings.model_copy(update={"retrain_backlog": 10**9}))  # default bar 0.70
    assert keep.checks["estimated_f1"]["triggered"] is False


def test_consecutive_windows_and_the_api_gauges(fresh):
    from rakuten_mlops.serving.metrics import MonitoringCollector

    now = datetime.now(UTC)
    log_window(fresh, window(44), labelled=False, when=now - timedelta(hours=30))  # the window before
    log_window(fresh, window(45), labelled=False, when=now - timedelta(hours=1))
    summary = run_estimate(fresh.settings, "1d", windows=3, now=now).summary
    assert [w["n"] for w in summary["windows"]] == [0, WINDOW_ROWS, WINDOW_ROWS]
    empty = summary["windows"][0]
    assert empty["status"] == "no_predictions" and empty["trusted"] is False
    assert summary["n"] == WINDOW_ROWS and summary["window_end"] == now.isoformat()
    families = {f.name: f for f in MonitoringCollector(fresh.settings.database_url, ttl=0).collect()}
    (sample,) = families["rakuten_model_estimated_f1"].samples
    assert sample.labels == {"version": fresh.version}
    assert sample.value == pytest.approx(summary["f1_weighted"])
    (trusted,) = families["rakuten_model_estimated_trusted"].samples
    assert trusted.value == 1.0
    low, high = summary["interval"]
    assert families["rakuten_model_estimated_f1_low"].samples[0].value == pytest.approx(low)
    assert families["rakuten_model_estimated_f1_high"].samples[0].value == pytest.approx(high)


def test_training_measured_calibration_and_the_gate_checked_it(platform):
    """The session model's run: ECE, its sampling floor, per-class gaps and the reliability diagram;
    its version's tags hold the reference the estimate compares windows with."""
    from mlflow import MlflowClient

    client = MlflowClient(platform.settings.mlflow_tracking_uri)
    mv = client.get_model_version(platform.settings.registered_model, platform.version)
    run = client.get_run(mv.run_id)
    metrics = run.data.metrics
    assert 0.0 < metrics["ece"] < 0.2 and 0.0 < metrics["ece_floor"] < metrics["ece"] + 0.05
    assert metrics["ece_excess"] == pytest.approx(max(metrics["ece"] - metrics["ece_floor"], 0.0))
    assert any(k.startswith("calibration_gap_class_") for k in metrics)
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "evaluation")}
    assert {"evaluation/reliability_diagram.png", "evaluation/reliability.json"} <= artifacts
    assert {
        "ece",
        "ece_excess",
        "reference_oov_rate",
        "reference_confidence",
        "reference_class_shares",
    } <= set(mv.tags)
    assert mv.tags["gate_decision"] == "promoted"
    assert (
        "calibration error" in mv.tags["gate_reason"]
        and "<= RAKUTEN_MAX_ECE 0.0500" in mv.tags["gate_reason"]
    )
