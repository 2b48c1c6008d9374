"""The Monitoring page's label-feedback panel in Streamlit's AppTest, on a real platform (SQLite):
labels stored by the same function as ``POST /feedback``, realized F1 by ``evaluate-feedback``."""

from __future__ import annotations

from rakuten_mlops.monitoring.feedback import LabelIn, evaluate_feedback, store_labels
from tests.ui.apptest import log_predictions, main_text, metrics, open_app


def frame_with(at, column: str):
    (found,) = [d.value for d in at.main.dataframe if column in d.value.columns]
    return found


def test_monitoring_shows_feedback_counts_and_realized_f1(ui_env):
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import Prediction

    assert log_predictions(ui_env, 2, "1") == 450
    with engine_for(ui_env.database_url).connect() as conn:
        logged = conn.execute(select(Prediction.prediction_id, Prediction.prdtypecode).limit(200)).all()
    labels = [
        LabelIn(code if i % 4 else 10 if code != 10 else 40, "merchant" if i < 150 else "moderation", pid)
        for i, (pid, code) in enumerate(logged)
    ]
    assert store_labels(ui_env.database_url, labels).stored == 200
    (evaluation,) = evaluate_feedback(ui_env, "1d", min_labels=100).versions

    at = open_app("monitoring")
    assert not at.exception
    shown = metrics(at)
    assert (shown["Feedback labels"], shown["Feedback labels (24 h)"]) == ("200", "200")
    counts = frame_with(at, "last_24h")
    assert dict(zip(counts["source"], counts["labels"], strict=True)) == {"merchant": 150, "moderation": 50}
    realized = frame_with(at, "f1_macro")
    assert realized.iloc[0]["f1_weighted"] == evaluation.f1_weighted and realized.iloc[0]["n_rows"] == 200
    assert 0.5 < evaluation.accuracy == realized.iloc[0]["accuracy"] <= 0.75 + 1e-9


def test_monitoring_without_feedback_says_how_labels_arrive(empty_env):
    text = main_text(open_app("monitoring"))
    assert "No feedback label yet" in text and "POST /feedback" in text
    assert "rakuten-mlops evaluate-feedback --window 1d" in text
