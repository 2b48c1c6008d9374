"""Training, the gate, forced promotion, rollback and failures on the embedded default
(SQLite data DB, SQLite MLflow store, local artifacts), driven through the CLI as a user would."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from tests.support import free_port
from tests.training.factories import generated, model_events, noisy_labels


@pytest.fixture
def gate_env(settings, monkeypatch):
    monkeypatch.setenv("RAKUTEN_MIN_F1", "0.5")
    monkeypatch.setenv("RAKUTEN_MAX_ECE", "0.2")  # models of 2-3k rows are less calibrated (docs/training.md)
    return settings


def _client(settings):
    from rakuten_mlops.registry import connect

    return connect(settings)


def _production(settings) -> str | None:
    from rakuten_mlops.registry import production_version

    return production_version(settings)


def test_train_promote_then_serve_the_same_predictions(gate_env, products, cli, tmp_path):
    from rakuten_mlops.model.loading import load_pipeline
    from rakuten_mlops.settings import Settings
    from rakuten_mlops.training.train import run_training

    products(generated(3000, 1))
    out = tmp_path / "decision.json"
    result = cli("train", "--promote", "--output", str(out))
    assert result.code == 0, result.err
    assert "backends: data=sqlite" in result.out
    assert "version 1 PROMOTED" in result.out
    decision = json.loads(out.read_text())
    assert decision["version"] == "1" and decision["decision"] == "promoted"
    assert 0.5 < decision["metrics"]["f1_weighted"] <= 1.0
    assert decision["production_version"] is None and decision["reasons"]

    settings = Settings()
    # a second, in-memory training: the loaded production model must predict exactly like the pipeline
    trained = run_training(settings, promote=True)
    assert trained.decision.promoted and trained.version == "2"
    served = load_pipeline("models:/rakuten_classifier@production")
    test = generated(400, 99)
    np.testing.assert_array_equal(served.predict(test), trained.pipeline.predict(test))
    np.testing.assert_allclose(served.predict_proba(test), trained.pipeline.predict_proba(test))

    # tracking: params, metrics, artifacts, lineage and the dataset inputs of the run
    client = _client(settings)
    run = client.get_run(trained.run_id)
    assert run.data.metrics["f1_weighted"] == pytest.approx(trained.metrics["f1_weighted"])
    assert {"f1_macro", "accuracy", "training_seconds"} <= set(run.data.metrics)
    assert any(k.startswith("f1_class_") for k in run.data.metrics)
    assert run.data.params["model"] == "sgd" and run.data.tags["git_sha"]
    assert run.data.tags["rakuten.heartbeat"]  # what doctor --clean judges a run left RUNNING by
    artifacts = {a.path for a in client.list_artifacts(trained.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/classification_report.txt"} <= artifacts
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"training", "testing"}
    tags = client.get_model_version("rakuten_classifier", "2").tags
    for key in ("f1_weighted", "f1_macro", "accuracy", "train_rows", "test_rows", "batch_ids", "dataset_digest",
                "git_sha", "package_version", "gate_decision", "gate_reason"):  # fmt: skip
        assert tags.get(key), key
    assert tags["gate_decision"] == "promoted" and tags["batch_ids"] == "1"
    png = settings.artifacts_dir  # embedded: artifacts live under RAKUTEN_HOME
    assert list(png.rglob("confusion_matrix.png"))


def test_worse_model_is_registered_but_refused(gate_env, products, cli, tmp_path):
    products(generated(3000, 2))
    assert cli("train", "--promote").code == 0
    # a bad batch: twice as many training rows with random labels
    products(noisy_labels(generated(6000, 3), seed=3), split="train")
    out = tmp_path / "d.json"
    result = cli("train", "--promote", "--output", str(out))
    assert result.code == 0, result.err  # a refusal is not a failure
    assert "version 2 REJECTED" in result.out and "< production v1" in result.out
    decision = json.loads(out.read_text())
    assert decision["decision"] == "rejected" and decision["production_version"] == "1"
    assert decision["candidate_f1"] < decision["production_f1"]
    settings = gate_env.__class__()
    assert _production(settings) == "1"
    assert _client(settings).get_model_version("rakuten_classifier", "2").tags["gate_decision"] == "rejected"
    events = model_events(settings.database_url)
    assert [e["event_type"] for e in events] == ["trained", "promoted", "trained", "rejected"]
    assert events[-1]["candidate_f1"] < events[-1]["production_f1"]

    # a human can still run the gate by hand (exit 3 = refused) or override it with a reason
    refused = cli("promote", "2")
    assert refused.code == 3 and "REJECTED" in refused.out
    no_reason = cli("promote", "2", "--force")
    assert no_reason.code == 3 and "reason" in no_reason.err
    forced = cli("promote", "2", "--force", "--reason", "hotfix for a demo")
    assert forced.code == 0 and "forced" in forced.out
    assert _production(settings) == "2"
    last = model_events(settings.database_url)[-1]
    assert (
        last["event_type"] == "forced"
        and last["reason"] == "hotfix for a demo"
        and last["previous_version"] == "1"
    )


def test_rollback_walks_back_through_recorded_history(gate_env, products, cli):
    from rakuten_mlops.settings import Settings

    products(generated(2500, 4))
    for _ in range(3):
        assert cli("train", "--promote").code == 0
    settings = Settings()
    assert _production(settings) == "3"
    first = cli("rollback", "--reason", "bad latency")
    assert first.code == 0 and "from version 3 to version 2" in first.out
    assert _production(settings) == "2"
    assert cli("rollback").code == 0
    assert _production(settings) == "1"
    nothing = cli("rollback")
    assert nothing.code == 3 and "nothing to roll back" in nothing.err
    assert cli("rollback", "--to", "3", "--reason", "fixed").code == 0
    assert _production(settings) == "3"
    rollbacks = [e for e in model_events(settings.database_url) if e["event_type"] == "rollback"]
    assert [(e["previous_version"], e["version"], e["reason"]) for e in rollbacks] == [
        ("3", "2", "bad latency"), ("2", "1", "manual rollback"), ("1", "3", "fixed"),
    ]  # fmt: skip
    listing = cli("models", "--json")
    versions = {v["version"]: v for v in json.loads(listing.out)}
    assert versions["3"]["aliases"] == ["production"] and versions["1"]["aliases"] == []
    assert versions["1"]["tags"]["f1_weighted"] and versions["1"]["created_at"]
    table = cli("models")
    assert table.code == 0 and "3 version(s)" in table.out
    (row,) = [line for line in table.out.splitlines() if "production" in line and "version(s)" not in line]
    assert row.split()[0] == "3"


def test_too_few_rows_per_class_fails_before_training(settings, products, cli):
    frame = generated(3000, 5)
    rare = frame["prdtypecode"].value_counts().index[-1]
    frame = frame[frame["prdtypecode"] != rare]
    frame = frame._append(generated(3000, 6).query("prdtypecode == @rare").head(3))
    products(frame, split=None)
    result = cli("train", "--promote")
    assert result.code == 2
    assert f"{rare} (" in result.err and "fewer than 5 training rows" in result.err
    assert not (settings.home / "mlflow.db").exists() or not _client(settings).search_registered_models()
    assert model_events(settings.database_url) == []


def test_mlflow_unreachable_fails_fast_with_a_clear_message(settings, products, cli, monkeypatch):
    products(generated(2000, 7))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    result = cli("train", "--promote")
    assert result.code == 4
    assert "unreachable" in result.err and "MLFLOW_TRACKING_URI" in result.err
    assert time.monotonic() - start < 30
    assert cli("promote", "1").code == 4
    assert cli("rollback").code == 4
    assert model_events(settings.database_url) == []


def test_concurrent_promotions_never_leave_the_worse_model(gate_env, products, monkeypatch):
    """Compare-and-set: the worse candidate scored against an empty production, but the better one
    was promoted while it was still deciding; it must re-score and be refused."""
    from rakuten_mlops.settings import Settings
    from rakuten_mlops.training import registry
    from rakuten_mlops.training.train import run_training

    settings = Settings()
    products(generated(3000, 8))
    good = run_training(settings).version
    products(noisy_labels(generated(6000, 9), seed=9), split="train")
    bad = run_training(settings).version
    assert (good, bad) == ("1", "2")

    good_done = threading.Event()
    real_decide = registry._decide

    def slow_decide(settings, version, expected, *args, **kwargs):
        decision = real_decide(settings, version, expected, *args, **kwargs)
        if version == bad and expected is None:  # the bad one decided against an empty production...
            good_done.wait(60)  # ...and only reaches the lock after the good one was promoted
        return decision

    monkeypatch.setattr(registry, "_decide", slow_decide)
    results: dict[str, registry.GateDecision] = {}
    errors: list[BaseException] = []

    def run(version: str) -> None:
        try:
            results[version] = registry.promote(settings, version, actor=f"thread-{version}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            if version == good:
                good_done.set()

    threads = [threading.Thread(target=run, args=(v,)) for v in (bad, good)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert _production(settings) == good
    assert results[good].promoted and results[good].production_version is None
    assert results[bad].decision == "rejected" and results[bad].production_version == good
    kinds = [
        (e["event_type"], e["version"])
        for e in model_events(settings.database_url)
        if e["event_type"] != "trained"
    ]
    assert kinds == [("promoted", good), ("rejected", bad)]


def test_search_picks_parameters_on_a_validation_split(gate_env, products, cli, tmp_path):
    from rakuten_mlops.settings import Settings

    products(generated(2000, 12))
    out = tmp_path / "search.json"
    result = cli("train", "--model", "logreg", "--search", "--output", str(out))
    assert result.code == 0, result.err
    decision = json.loads(out.read_text())
    assert decision["decision"] == "registered" and decision["model"] == "logreg"
    assert decision["params"]["classifier"] == "LogisticRegression"
    assert decision["params"]["searched_C"] in (3.0, 10.0, 30.0)
    client = _client(Settings())
    artifacts = {a.path for a in client.list_artifacts(decision["run_id"], "evaluation")}
    assert "evaluation/search_trials.json" in artifacts
    assert client.get_run(decision["run_id"]).data.params["search"] == "True"
    assert cli("train", "--model", "svm").code != 0
