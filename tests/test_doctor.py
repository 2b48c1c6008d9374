"""``rakuten-mlops doctor`` on a real Postgres data database and the session's MLflow server: what
a job killed at the wrong moment could leave, made by hand, is reported as a violation (a reader
would take it for the truth) or a leftover (clearly unfinished); a consistent platform passes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

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
