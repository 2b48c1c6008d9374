"""Realized F1 from feedback labels reaches ``decide`` on Postgres and the session's MLflow server:
a poor realized F1 triggers retraining (and says it came from feedback), a good one does not,
and the newer of a labelled load and a feedback evaluation is the one that counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import f1_score

from rakuten_mlops.data.generator import generate_frame
from rakuten_mlops.monitoring.decision import decide
from rakuten_mlops.monitoring.feedback import (
    LabelIn,
    evaluate_feedback,
    realized_f1,
    realized_f1_weighted,
    store_labels,
)
from rakuten_mlops.monitoring.reference import model_outputs
from tests.monitoring.factories import log_predictions

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _clear_feedback(database_url: str) -> None:
    from sqlalchemy import delete

    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import FeedbackEvaluation, PredictionLabel

    with engine_for(database_url).begin() as conn:
        conn.execute(delete(PredictionLabel))
        conn.execute(delete(FeedbackEvaluation))


@pytest.fixture
def feedback_platform(fresh) -> Iterator:
    """The session platform with no feedback labels or evaluations (none left for other tests)."""
    _clear_feedback(fresh.settings.database_url)
    yield fresh
    _clear_feedback(fresh.settings.database_url)


def _labelled(platform, *, rows: int, seed: int, wrong_share: float, created_at: datetime | None = None):
    """Log ``rows`` predictions of the production model, then label them (a share wrongly)."""
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import Prediction

    frame = generate_frame(rows, seed=seed)
    outputs = model_outputs(platform.pipeline, frame)
    when = created_at or datetime.now(UTC)
    log_predictions(platform.settings.database_url, outputs, platform.version, created_at=when)
    with engine_for(platform.settings.database_url).connect() as conn:
        logged = conn.execute(
            select(Prediction.prediction_id, Prediction.prdtypecode).where(Prediction.created_at == when)
        ).all()
    rng = np.random.default_rng(seed)
    codes = sorted(set(frame["prdtypecode"]))
    truth = [
        int(rng.choice([c for c in codes if c != code])) if rng.random() < wrong_share else int(code)
        for _, code in logged
    ]
    labels = [LabelIn(t, "tests", pid) for (pid, _), t in zip(logged, truth, strict=True)]
    store_labels(platform.settings.database_url, labels)
    return truth, [int(code) for _, code in logged]


def test_poor_realized_f1_from_feedback_triggers_retraining(feedback_platform):
    settings = feedback_platform.settings
    truth, predicted = _labelled(feedback_platform, rows=300, seed=5, wrong_share=0.6)
    expected = f1_score(truth, predicted, average="weighted", zero_division=0)
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert realized_f1_weighted(
        settings, now - timedelta(hours=1), now, feedback_platform.version
    ) == pytest.approx(expected, abs=1e-12)
    run = evaluate_feedback(settings, "1h", min_labels=100)
    (version,) = run.versions
    assert version.n == 300 and version.evaluation_id is not None
    decision = decide(settings.model_copy(update={"retrain_backlog": 10**9}))
    live = decision.checks["live_f1"]
    assert live["source"] == "feedback" and live["triggered"] is True
    assert live["value"] == pytest.approx(expected, abs=1e-6) and live["n_rows"] == 300
    assert any("feedback labels of predictions" in r and "RAKUTEN_RETRAIN_F1" in r for r in decision.reasons)


def test_good_realized_f1_keeps_and_too_few_labels_are_not_stored(feedback_platform):
    settings = feedback_platform.settings
    _labelled(feedback_platform, rows=150, seed=6, wrong_share=0.0)
    too_few = evaluate_feedback(settings, "1h", min_labels=200)
    assert too_few.versions[0].evaluation_id is None and "not stored" in too_few.versions[0].note
    assert "no labelled batch evaluated" in decide(settings).checks["live_f1"]["note"]
    evaluate_feedback(settings, "1h", min_labels=100)
    live = decide(settings.model_copy(update={"retrain_backlog": 10**9})).checks["live_f1"]
    assert live["source"] == "feedback" and live["value"] >= 0.70 and live["triggered"] is False


def test_window_is_the_time_of_the_predictions(feedback_platform):
    settings = feedback_platform.settings
    old = datetime.now(UTC) - timedelta(days=3)
    _labelled(feedback_platform, rows=50, seed=7, wrong_share=0.0, created_at=old)
    now = datetime.now(UTC)
    assert realized_f1(settings, now - timedelta(days=1), now) == []
    (found,) = realized_f1(settings, now - timedelta(days=4), now)
    assert found.n == 50 and found.accuracy == 1.0


def test_the_newer_of_a_labelled_load_and_a_feedback_evaluation_counts(feedback_platform):
    from rakuten_mlops.data.loader import LoadPlan, load_next_batch
    from rakuten_mlops.monitoring.live import evaluate_live
    from rakuten_mlops.serving.metrics import MonitoringCollector

    settings = feedback_platform.settings.model_copy(update={"retrain_backlog": 10**9})
    collector = MonitoringCollector(settings.database_url, ttl=0)

    def gauge() -> float:
        (family,) = [f for f in collector.collect() if f.name == "rakuten_model_live_f1"]
        (sample,) = [s for s in family.samples if s.labels == {"version": feedback_platform.version}]
        return sample.value

    _labelled(feedback_platform, rows=120, seed=8, wrong_share=0.5)
    feedback = evaluate_feedback(settings, "1h", min_labels=100).versions[0]
    assert decide(settings).checks["live_f1"]["source"] == "feedback"
    assert gauge() == pytest.approx(feedback.f1_weighted)

    batch = load_next_batch(settings, feedback_platform.source, LoadPlan(batch_rows=200))
    live = evaluate_live(settings, batch.batch_id)
    check = decide(settings).checks["live_f1"]
    assert (check["source"], check["batch_id"]) == ("labelled_batch", batch.batch_id)
    assert gauge() == pytest.approx(live.f1_weighted) != pytest.approx(feedback.f1_weighted)

    again = evaluate_feedback(settings, "1h", min_labels=100).versions[0]
    assert decide(settings).checks["live_f1"]["source"] == "feedback"
    assert gauge() == pytest.approx(again.f1_weighted)
