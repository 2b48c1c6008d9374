"""The API's monitoring gauges (``serving.metrics.MonitoringCollector``): drift scores and severity from
the latest drift report, live F1 per version, nothing (and no error) while the database is down."""

from __future__ import annotations

from rakuten_mlops.serving.metrics import MonitoringCollector
from tests.support import free_port


def test_monitoring_gauges_come_from_the_latest_drift_report_and_live_evaluations(sqlite_url):
    from rakuten_mlops.db import session_scope, upgrade
    from rakuten_mlops.db.models import DriftReport, LiveEvaluation, LoadBatch

    upgrade(sqlite_url)
    with session_scope(sqlite_url) as session:
        batch = LoadBatch(source="s", source_digest="d", row_start=0, row_end=10, status="succeeded")
        session.add(batch)
        session.flush()
        session.add(DriftReport(severity="low", summary={"severity": "low", "tests": []}))
        session.add(
            DriftReport(
                severity="high",
                drifted=True,
                summary={
                    "severity": "high",
                    "tests": [
                        {
                            "feature": "text_length",
                            "test": "ks",
                            "score": 0.42,
                            "threshold": 0.1,
                            "drifted": True,
                        },
                        {
                            "feature": "prdtypecode",
                            "test": "psi",
                            "score": 0.05,
                            "threshold": 0.2,
                            "drifted": False,
                        },
                    ],
                },
            )
        )
        for version, f1 in (("1", 0.81), ("2", 0.7), ("2", 0.77)):
            session.add(
                LiveEvaluation(
                    model_version=version, batch_id=batch.id, n_rows=10, f1_weighted=f1, accuracy=f1
                )
            )
    families = {f.name: f for f in MonitoringCollector(sqlite_url).collect()}
    scores = {
        (s.labels["feature"], s.labels["test"]): s.value for s in families["rakuten_drift_score"].samples
    }
    assert scores == {("text_length", "ks"): 0.42, ("prdtypecode", "psi"): 0.05}
    assert families["rakuten_drift_severity"].samples[0].value == 3
    live = {s.labels["version"]: s.value for s in families["rakuten_model_live_f1"].samples}
    assert live == {"1": 0.81, "2": 0.77}


def test_monitoring_gauges_survive_a_database_outage():
    collector = MonitoringCollector(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x", ttl=0)
    assert list(collector.collect()) == []
