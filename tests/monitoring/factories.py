"""Test objects of the monitoring tests: prediction-log rows as the API writes them, cleared tables."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pandas as pd


def log_predictions(
    database_url: str, outputs: pd.DataFrame, model_version: str, created_at: datetime | None = None
):
    """Insert prediction-log rows exactly as the API writes them (one per row of ``outputs``)."""
    from sqlalchemy import insert

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction

    upgrade(database_url)
    when = created_at or datetime.now(UTC)
    rows = [
        {
            "prediction_id": str(uuid.uuid4()),
            "created_at": when,
            "model_version": str(model_version),
            "prdtypecode": int(r.prdtypecode),
            "confidence": float(r.confidence),
            "text_length": int(r.text_length),
            "word_count": int(r.word_count),
            "description_empty": bool(r.description_empty),
            "oov_rate": float(r.oov_rate),
            "productid": None,
        }
        for r in outputs.itertuples()
    ]
    with engine_for(database_url).begin() as conn:
        conn.execute(insert(Prediction.__table__), rows)
    return len(rows)


def clear_monitoring_tables(database_url: str) -> None:
    """Forget predictions, drift reports, live evaluations, performance estimates and retrain
    decisions (not products)."""
    from sqlalchemy import delete

    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import (
        DriftReport,
        LiveEvaluation,
        ModelEvent,
        PerformanceEstimate,
        Prediction,
    )

    with engine_for(database_url).begin() as conn:
        for table in (Prediction, DriftReport, LiveEvaluation, PerformanceEstimate):
            conn.execute(delete(table))
        conn.execute(delete(ModelEvent).where(ModelEvent.event_type == "retrain_decision"))
