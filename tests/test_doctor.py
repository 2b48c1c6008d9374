"""``rakuten-mlops doctor`` on a real Postgres data database and the session's MLflow server: what
a job killed at the wrong moment could leave, made by hand, is reported as a violation (a reader
would take it for the truth) or a leftover (clearly unfinished); a consistent platform passes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from tests.support.paths import isolated_platform_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TAGS = {"f1_weighted": "0.9", "batch_ids": "1", "dataset_digest": "d", "gate_decision": "registered"}


@pytest.fixture
def settings(pg_url, mlflow_server, tmp_path, monkeypatch):
    from rakuten_mlops.settings import Settings, get_settings

    env = isolated_platform_env("doctor", tmp_path / "home", pg_url, mlflow_server.uri)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


def _batch(conn, batch_id: int, status: str, row_count: int, products: int) -> None:
    from rakuten_mlops.db.models import LoadBatch, Product

    now = datetime.now(UTC)
    conn.execute(
        insert(LoadBatch).values(
            id=batch_id, source="s", source_digest="d", row_start=0, row_end=row_count,
            row_count=row_count, status=status, started_at=now,
        )
    )  # fmt: skip
    conn.execute(
        insert(Product),
        [
            {"productid": batch_id * 100 + i, "designation": "x", "prdtypecode": 10, "split": "train",
             "batch_id": batch_id, "source_row": i, "loaded_at": now}
            for i in range(products)
        ],
    )  # fmt: skip


def _version(client, name: str, tags: dict[str, str]) -> str:
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_text("model", "model/MLmodel")
    return client.create_model_version(
        name, f"runs:/{run.info.run_id}/model", run.info.run_id, tags=tags
    ).version


def _doctor(*options: str) -> tuple[int, dict]:
    from rakuten_mlops.cli import app

    done = CliRunner().invoke(app, ["doctor", "--json", *options])
    assert "{" in done.stdout, (done.exit_code, done.output, done.exception)
    return done.exit_code, json.loads(done.stdout[done.stdout.index("{") :])


def test_doctor_tells_violations_from_leftovers(settings):
    from rakuten_mlops.db import engine_for, record_model_event, upgrade
    from rakuten_mlops.db.models import DriftReport
    from rakuten_mlops.registry import connect

    upgrade(settings.database_url)
    assert _doctor() == (0, {"ok": True, "violations": [], "leftovers": []})

    with engine_for(settings.database_url).begin() as conn:
        _batch(conn, 1, "succeeded", 2, 2)  # whole
        _batch(conn, 2, "succeeded", 3, 1)  # half a batch
        _batch(conn, 3, "failed", 0, 1)  # products of a failed batch
    client = connect(settings)
    client.create_registered_model(settings.registered_model)
    first = _version(client, settings.registered_model, TAGS)
    record_model_event(settings.database_url, "trained", settings.registered_model, version=first)
    client.set_registered_model_alias(settings.registered_model, "production", first)  # moved, never recorded
    second = _version(client, settings.registered_model, {**TAGS, "gate_decision": "promoted"})
    # tagged as rolled back to, never recorded as such
    client.set_model_version_tag(settings.registered_model, second, "rollback_reason", "x")
    _version(client, settings.registered_model, {"f1_weighted": "0.9"})  # half the tags
    experiment = client.create_experiment(settings.drift_experiment)
    client.set_terminated(client.create_run(experiment).info.run_id)  # finished, never recorded
    client.create_run(experiment)  # left running
    with engine_for(settings.database_url).begin() as conn:
        conn.execute(
            insert(DriftReport).values(
                severity="none", summary={}, html_path=str(settings.home / "gone.html"), mlflow_run_id=None
            )
        )

    code, found = _doctor()
    violations = sorted(f"{v['area']}: {v['what']}" for v in found["violations"])
    assert code == 1
    expected = [
        "data: load batch 2 succeeded with 3 rows but holds 1",
        "data: load batch 3 is failed but holds 1 products",
        "drift: MLflow run",
        "drift: drift report 1 names MLflow run None",
        "drift: drift report 1 names /",
        "registry: @production points to version 1",
        f"registry: version {second} is tagged promoted",
        f"registry: version {second} is tagged rolled back to",
        "registry: version 3 lacks its training tags ['batch_ids', 'dataset_digest', 'gate_decision']",
    ]
    assert len(violations) == len(expected), violations
    for line, start in zip(violations, sorted(expected), strict=True):
        assert line.startswith(start), (line, start)
    leftovers = [f["what"] for f in found["leftovers"]]
    assert any("left running" in what for what in leftovers), leftovers
    assert sum("has no 'trained' row" in what for what in leftovers) == 2  # versions 2 and 3

    # --record-alias records the alias where it is; the history then agrees with it
    _code, found = _doctor("--record-alias")
    assert not any(v["what"].startswith("@production") for v in found["violations"])
    assert _doctor("--record-alias")[1] == found  # nothing more to record
    from rakuten_mlops.training.registry import _history

    assert _history(settings) == [first]


def _aged(path, seconds: float) -> None:
    """Date ``path`` and everything in it ``seconds`` back, as a job killed that long ago left it."""
    import os
    import time

    stamp = time.time() - seconds
    for item in [path, *path.rglob("*")]:
        os.utime(item, (stamp, stamp))


def _leftover_folder(settings, name: str, age_seconds: float = 0):
    folder = settings.reports_dir / "drift" / name
    folder.mkdir(parents=True)
    (folder / "report.json").write_text("{}")
    if age_seconds:
        _aged(folder, age_seconds)
    return folder


def test_clean_clears_abandoned_leftovers_and_keeps_fresh_ones(settings):
    """Old leftovers of every kind are cleared by `doctor --clean`; ones younger than
    --older-than (a job may still be at work) are kept until they are old enough."""
    import time

    from sqlalchemy import select, update

    from rakuten_mlops.db import engine_for, record_model_event, upgrade
    from rakuten_mlops.db.models import LiveEvaluation, LoadBatch
    from rakuten_mlops.registry import connect
    from rakuten_mlops.training.registry import record_unrecorded_move
    from tests.serving.factories import register_version

    two_hours = 2 * 3600
    upgrade(settings.database_url)
    # production: a real model (trained on batch 1), recorded; batch 2 was loaded after it and
    # its live evaluation never ran (the load was killed after its commit)
    version = register_version(settings.mlflow_tracking_uri, settings.registered_model)
    client = connect(settings)
    for key, value in TAGS.items():
        client.set_model_version_tag(settings.registered_model, version, key, value)
    record_model_event(settings.database_url, "trained", settings.registered_model, version=version)
    record_unrecorded_move(settings)
    with engine_for(settings.database_url).begin() as conn:
        _batch(conn, 1, "succeeded", 2, 2)
        _batch(conn, 2, "succeeded", 3, 3)
        long_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=two_hours)
        conn.execute(update(LoadBatch).values(started_at=long_ago, finished_at=long_ago))
    # runs left running two hours ago and one just started; staging and unrecorded folders
    old_ms = int((time.time() - two_hours) * 1000)
    drift = client.create_experiment(settings.drift_experiment)
    training = client.create_experiment(settings.training_experiment)
    old_runs = [client.create_run(e, start_time=old_ms).info.run_id for e in (drift, training)]
    fresh_run = client.create_run(training).info.run_id
    old_folders = [
        _leftover_folder(settings, ".20260101T000000Z.111.partial", two_hours),
        _leftover_folder(settings, "20260101T000000Z", two_hours),
    ]
    fresh_folder = _leftover_folder(settings, ".20260101T000001Z.222.partial")
    assert len(_doctor()[1]["leftovers"]) == 7  # a batch, three runs, three folders

    code, found = _doctor("--clean")
    assert code == 0, found
    done = found["cleaned"]["done"]
    assert sorted(line.split()[0] for line in done) == ["live", "marked", "marked", "removed", "removed"], (
        done
    )
    assert [f["what"].split()[:3] for f in found["leftovers"]] == [
        ["training", "run", fresh_run],
        [str(fresh_folder), "is", "the"],
    ]
    assert all("less than 1:00:00 ago" in line for line in found["cleaned"]["kept"]), found["cleaned"]
    assert not any(folder.exists() for folder in old_folders) and fresh_folder.exists()
    assert [client.get_run(r).info.status for r in (*old_runs, fresh_run)] == ["KILLED", "KILLED", "RUNNING"]
    with engine_for(settings.database_url).connect() as conn:
        measured = conn.execute(select(LiveEvaluation.batch_id, LiveEvaluation.model_version)).all()
    assert measured == [(2, version)]

    time.sleep(1.5)  # the fresh leftovers are now older than --older-than 1s
    code, found = _doctor("--clean", "--older-than", "1s")
    assert code == 0 and len(found["cleaned"]["done"]) == 2 and found["leftovers"] == [], found
    assert _doctor() == (0, {"ok": True, "violations": [], "leftovers": []})


def test_clean_keeps_a_long_run_whose_job_still_beats_and_kills_an_abandoned_one(settings):
    """Two training runs started two hours ago and still RUNNING: one whose job is alive and
    writes its heartbeat (``registry.heartbeat``, as training, drift and estimate jobs do), one
    whose job died after its last beat two hours ago. Only the abandoned one is marked KILLED."""
    import time

    from rakuten_mlops.registry import HEARTBEAT_TAG, connect, heartbeat

    two_hours_ago = time.time() - 2 * 3600
    client = connect(settings)
    training = client.create_experiment(settings.training_experiment)
    live, abandoned = (
        client.create_run(training, start_time=int(two_hours_ago * 1000)).info.run_id for _ in "ab"
    )
    last_beat = datetime.fromtimestamp(two_hours_ago, UTC).isoformat(timespec="seconds")
    client.set_tag(abandoned, HEARTBEAT_TAG, last_beat)

    with heartbeat(settings, live, every=0.2):
        code, found = _doctor("--clean", "--older-than", "5m")
        assert code == 0, found
        assert client.get_run(live).info.status == "RUNNING"
    assert client.get_run(abandoned).info.status == "KILLED"
    assert found["cleaned"]["done"] == [f"marked MLflow run {abandoned} KILLED"], found["cleaned"]
    assert [line.split()[2] for line in found["cleaned"]["kept"]] == [live], found["cleaned"]
    assert client.get_run(live).data.tags[HEARTBEAT_TAG] > last_beat
