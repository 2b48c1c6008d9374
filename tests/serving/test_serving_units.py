"""Fast tests of the serving parts on their own: inference plan, prediction log, monitoring gauges,
Argo submission (against a local HTTP server that records the request), the app without a model."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import SecretStr

from rakuten_mlops.model.runner import CompiledLinearPipeline, WholePipeline, plan_for
from rakuten_mlops.serving.metrics import MonitoringCollector
from rakuten_mlops.serving.prediction_log import PredictionLog, PredictionRecord
from rakuten_mlops.serving.retrain import ArgoRetrainer
from tests.serving.factories import REALISTIC_PRODUCTS, fit_pipeline
from tests.support import free_port


@pytest.fixture(scope="module")
def pipeline():
    return fit_pipeline(0)


def _texts(n_generated: int = 2_000) -> tuple[list[str], list[str]]:
    """Realistic, real, generated and awkward products (HTML, mojibake, empty, unknown words)."""
    from rakuten_mlops.data.generator import generate_frame
    from tests.serving.factories import sample_frame

    real = sample_frame()
    generated = generate_frame(n_generated, seed=11)
    awkward = [
        ("!!!", ""),
        ("zzqx wvyk qqpl", "mots inconnus partout"),
        ("Ã©dition limitÃ©e &amp; <b>collector</b>", "Ã  prix rÃ©duit"),
        ("Livre " * 2_000, "très " * 1_500),
        ("Figurine 🐉 Dragon Ball", "😀"),
        ("a", "b"),
    ]
    designations = (
        [p["designation"] for p in REALISTIC_PRODUCTS]
        + real["designation"].tolist()
        + generated["designation"].tolist()
        + [d for d, _ in awkward]
    )
    descriptions = (
        [p.get("description", "") for p in REALISTIC_PRODUCTS]
        + real["description"].tolist()
        + generated["description"].fillna("").tolist()
        + [e for _, e in awkward]
    )
    return designations, descriptions


def test_compiled_runner_gives_the_pipelines_predictions_and_features(pipeline):
    """The served probabilities are the pipeline's (to float32 precision: it computes in float32)."""
    designations, descriptions = _texts()
    plan = plan_for(pipeline)
    assert isinstance(plan, CompiledLinearPipeline)
    got, got_features = plan.run(designations, descriptions)
    expected, expected_features = WholePipeline(pipeline).run(designations, descriptions)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-8)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)
    assert [f[:3] for f in got_features] == [f[:3] for f in expected_features]
    np.testing.assert_allclose([f[3] for f in got_features], [f[3] for f in expected_features], atol=1e-12)
    assert all(0.0 <= f[3] <= 1.0 for f in got_features)
    # one product at a time gives the same as the batch (batching never changes an answer)
    for i in (0, 5, len(designations) - 3):
        alone, alone_features = plan.run([designations[i]], [descriptions[i]])
        np.testing.assert_allclose(alone[0], got[i], rtol=1e-12, atol=1e-15)
        assert alone_features[0] == got_features[i]


def test_runner_whose_output_differs_is_not_used(pipeline, monkeypatch, caplog):
    """The load-time self-check: a compiled runner that disagrees with the pipeline is not used."""
    original = CompiledLinearPipeline.run

    def off_by_a_little(self, designations, descriptions):
        proba, features = original(self, designations, descriptions)
        return proba[:, ::-1].copy(), features

    monkeypatch.setattr(CompiledLinearPipeline, "run", off_by_a_little)
    with caplog.at_level("WARNING", logger="rakuten_mlops.serving"):
        plan = plan_for(pipeline)
    assert isinstance(plan, WholePipeline)
    assert "compiled runner's output differs" in caplog.text


def test_other_linear_classifier_runs_the_whole_pipeline():
    """Same preparation and features, a plain scikit-learn classifier: no compiled runner."""
    from sklearn.linear_model import SGDClassifier

    from rakuten_mlops.model import build_pipeline
    from tests.serving.factories import sample_frame

    frame = sample_frame()
    other = build_pipeline("sgd")
    other.steps[-1] = ("classifier", SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=0))
    other.fit(frame[["designation", "description"]], frame["prdtypecode"])
    plan = plan_for(other)
    assert isinstance(plan, WholePipeline)
    proba, features = plan.run(["Livre de cuisine"], [""])
    assert proba.shape == (1, 27) and features[0][:3] == (16, 3, True) and 0 <= features[0][3] <= 1


def test_unknown_pipeline_shape_runs_as_a_whole():
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline

    from tests.serving.factories import sample_frame

    frame = sample_frame()
    other = Pipeline(
        [
            ("vectorize", ColumnTransformer([("d", TfidfVectorizer(), "designation")])),
            ("classify", SGDClassifier(loss="log_loss", max_iter=5, tol=None)),
        ]
    ).fit(frame[["designation", "description"]], frame["prdtypecode"])
    plan = plan_for(other)
    assert isinstance(plan, WholePipeline)
    proba, features = plan.run(["Livre de cuisine"], [""])
    assert proba.shape == (1, 27) and len(features) == 1


def _records(n: int) -> list[PredictionRecord]:
    now = datetime.now(UTC)
    return [
        PredictionRecord(f"id-{i}-{time.monotonic_ns()}", now, "1", 10, 0.5, 20, 3, True, 0.1, i)
        for i in range(n)
    ]


def test_prediction_log_writes_batches_and_drops_when_full(sqlite_url):
    log = PredictionLog(sqlite_url, max_queue=100, flush_rows=40, flush_seconds=0.2)
    assert log.append(_records(130)) == 30  # queue holds 100: the rest is dropped and counted
    assert log.dropped == 30
    log.start()
    deadline = time.monotonic() + 10
    while log.written < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    assert log.written == 100 and log.depth == 0
    import sqlalchemy as sa

    with sa.create_engine(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("select count(*) from predictions")).scalar() == 100


def test_prediction_log_keeps_rows_while_the_database_is_down():
    down = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nothing"
    log = PredictionLog(down, max_queue=50, flush_rows=10, flush_seconds=0.1)
    log.start()
    started = time.monotonic()
    assert log.append(_records(30)) == 0
    assert time.monotonic() - started < 0.1  # the request path never waits on the database
    time.sleep(1.0)
    assert log.written == 0 and log.depth == 30 and log.last_error  # kept, not lost
    # bounded: the 30 rows of the failed write stay pending in the writer, the queue holds 50 more
    assert log.append(_records(40)) == 0
    assert log.append(_records(40)) == 30
    assert log.dropped == 30 and log.depth == 80
    t0 = time.monotonic()
    log.close(timeout=10)
    assert time.monotonic() - t0 < 10


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


def _argo_server(request: dict) -> tuple[int, dict]:
    """Answers like argo-server: a submit starts a run; a run's status is Succeeded unless missing."""
    if request["method"] == "POST":
        name = request["body"]["submitOptions"]["generateName"] + "x7k2p"
        return 200, {
            "metadata": {"name": name, "namespace": "rakuten", "creationTimestamp": "2026-11-22T10:00:00Z"}
        }
    if request["path"].endswith("/missing"):
        return 404, {"message": "not found"}
    return 200, {"metadata": {"name": request["path"].rsplit("/", 1)[1]}, "status": {"phase": "Succeeded"}}


@pytest.fixture
def argo_stub(stand_in_server):
    server = stand_in_server(_argo_server)
    return server.address, server.requests


def test_kubernetes_retrain_submits_the_workflow_template(settings, argo_stub, monkeypatch):
    address, recorded = argo_stub
    settings.argo_secure = False  # the argo CLI's ARGO_SECURE=false
    settings.retrain_mode = "kubernetes"
    settings.argo_server = address
    settings.argo_token = SecretStr("abc123")
    settings.namespace = "rakuten"
    retrainer = ArgoRetrainer(settings)
    job = retrainer.start()
    assert (
        job["id"] == "rakuten-train-api-x7k2p" and job["mode"] == "kubernetes" and job["status"] == "running"
    )
    sent = recorded[0]
    assert sent["path"] == "/api/v1/workflows/rakuten/submit"
    assert sent["auth"] == "Bearer abc123"
    assert sent["body"]["resourceKind"] == "WorkflowTemplate"
    assert sent["body"]["resourceName"] == "rakuten-train"
    assert retrainer.status(job["id"])["status"] == "succeeded"
    assert recorded[1]["path"] == "/api/v1/workflows/rakuten/rakuten-train-api-x7k2p"
    with pytest.raises(KeyError):
        retrainer.status("missing")


def test_kubernetes_retrain_reports_an_unreachable_argo_server(settings, monkeypatch):
    from rakuten_mlops.serving.errors import RetrainSubmissionError

    settings.argo_secure = False  # the argo CLI's ARGO_SECURE=false
    settings.argo_server = f"127.0.0.1:{free_port()}"
    with pytest.raises(RetrainSubmissionError, match="cannot reach the Argo server"):
        ArgoRetrainer(settings).start()


def test_app_without_a_model_is_alive_but_not_ready(settings, monkeypatch):
    from fastapi.testclient import TestClient

    from rakuten_mlops.serving import create_app

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings.mlflow_tracking_uri = f"http://127.0.0.1:{free_port()}"  # nothing listens: registry down
    with TestClient(create_app(settings, prediction_log=False)) as client:
        assert client.get("/health").status_code == 200
        deadline = time.monotonic() + 10
        while (
            client.get("/ready").json()["reason"] == "the model is still loading"
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        ready = client.get("/ready")  # an unreachable registry is not "no production version yet"
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "unreachable" in ready.json()["reason"]
        predict = client.post("/predict", json={"designation": "Livre"})
        assert predict.status_code == 503 and predict.headers["retry-after"] == "5"
        assert client.post("/admin/reload").status_code == 404  # no token configured: admin is off
        assert client.get("/nope").json() == {"error": "Not Found"}


@pytest.mark.parametrize("version", ["12", 'odd,"version"'])
def test_copy_text_is_the_csv_copy_reads(version):
    """Rows as COPY's CSV: NULL for a missing oov_rate or productid, quoted only where needed."""
    import csv
    import io

    from rakuten_mlops.serving.prediction_log import copy_text

    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rows = [
        PredictionRecord("a1-000", now, version, 10, 0.25, 20, 3, True, None, None),
        PredictionRecord("a1-001", now, version, 1280, 0.1234567890123, 7, 1, False, 0.5, 42),
    ]
    parsed = list(csv.reader(io.StringIO(copy_text(rows, 0.2))))
    stamp = "2026-01-02 03:04:05.678901+00:00"
    assert parsed == [
        ["a1-000", stamp, version, "10", "0.25", "20", "3", "True", "", "", "", "0.2"],
        ["a1-001", stamp, version, "1280", "0.1234567890123", "7", "1", "False", "0.5", "42", "", "0.2"],
    ]
