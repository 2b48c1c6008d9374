"""The rendered workflows run end to end, from their own YAML, against a real Postgres and MLflow server.

Each step is the real ``rakuten-mlops`` console script of the venv, started by the local executor
with exactly the env, arguments and parameter wiring of the rendered objects; the chart's Secret,
ConfigMap and source-data claim are stood in for by the test's values.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from workflows.local_executor import LocalExecutor, WorkflowRun

from tests.support import VENV_BIN, ManagedProcess, free_port, temporary_database, wait_until
from tests.workflows.argo_support import waiting_for
from workflows import common

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(600)]

NEEDS_LOAD = waiting_for("data load", "--source", "--initial-fraction", "--batch-rows")
NEEDS_TRAIN = waiting_for("train", "--model", "--promote", "--output")
NEEDS_DRIFT = waiting_for("drift", "--window", "--output")
NEEDS_DECIDE = waiting_for("decide", "--output")
NEEDS_SERVE = waiting_for("serve", "--host", "--port")


def generate(out: Path, *extra: str) -> Path:
    """A source-data drop in the official CSV layout (test setup, not a workflow step)."""
    subprocess.run(
        [str(VENV_BIN / "rakuten-mlops"), "data", "generate", "--out", str(out), *extra],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


class Platform:
    """One isolated platform: its own data DB, registered model name and source-data claim."""

    def __init__(self, rendered_objects, pg_url: str, mlflow_url: str, root: Path) -> None:
        self.db_url = pg_url
        self.mlflow_url = mlflow_url
        self.model_name = f"wf_e2e_{uuid.uuid4().hex[:8]}"
        self.source = root / "source-data"
        self.source.mkdir()
        self.lines: list[str] = []
        self.executor = LocalExecutor(
            rendered_objects,
            secrets={common.POSTGRES_SECRET: {"database-url": pg_url}},
            config_maps={
                common.CONFIG_MAP: {
                    "MLFLOW_TRACKING_URI": mlflow_url,
                    "RAKUTEN_REGISTERED_MODEL": self.model_name,
                    "RAKUTEN_MIN_F1": "0.5",  # the gate must pass on 1-2k synthetic rows
                    "RAKUTEN_MAX_ECE": "0.2",  # (and such small models are less calibrated)
                    "RAKUTEN_RETRAIN_BACKLOG": "1000000",  # only drift may trigger retraining here
                    "RAKUTEN_RETRAIN_F1": "0.3",  # (a model of 3k rows has a modest live F1)
                    "RAKUTEN_DRIFT_MIN_CURRENT_ROWS": "100",
                }
            },
            claims={common.SOURCE_DATA_CLAIM: self.source},
            path=[VENV_BIN],
            workdir=root / "pods",
            log=self.lines.append,
        )
        (root / "pods").mkdir()

    def run(self, name: str, **parameters: str) -> WorkflowRun:
        run = self.executor.submit(name, parameters)
        assert run.phase == "Succeeded", run.summary() + "\n" + "\n".join(self.lines[-60:])
        return run

    def load(self, drop: str, **parameters: str) -> WorkflowRun:
        return self.run("incremental-load", source=f"{common.SOURCE_MOUNT}/{drop}", **parameters)

    def scalar(self, sql: str) -> int:
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text(sql)).scalar_one()
        finally:
            engine.dispose()

    def versions(self) -> list[str]:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.mlflow_url, registry_uri=self.mlflow_url)
        return sorted(v.version for v in client.search_model_versions(f"name='{self.model_name}'"))

    def production_version(self) -> str:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.mlflow_url, registry_uri=self.mlflow_url)
        return client.get_model_version_by_alias(self.model_name, "production").version


@pytest.fixture(scope="module")
def platform(rendered_objects, pg_server, mlflow_server, tmp_path_factory) -> Iterator[Platform]:
    """One platform for the module's tests, which run as consecutive days of its life (in file order)."""
    with temporary_database(pg_server, "rk_wf_e2e") as url:
        yield Platform(rendered_objects, url, mlflow_server.uri, tmp_path_factory.mktemp("platform"))


@NEEDS_LOAD
@NEEDS_TRAIN
def test_scheduled_loads_then_weekly_training_promotes_a_model(platform):
    generate(platform.source / "drop-1", "--rows", "3000", "--seed", "1")

    first = platform.load("drop-1", **{"initial-fraction": "0.5"})
    assert first.node("load").attempts[0].argv[:3] == ["rakuten-mlops", "data", "load"]
    assert platform.scalar("select count(*) from products") == 1500
    platform.load("drop-1", **{"batch-unit": "rows", "batch-size": "600"})
    assert platform.scalar("select count(*) from products") == 2100
    assert platform.scalar("select count(*) from load_batches where status = 'succeeded'") == 2

    run = platform.run("rakuten-train-weekly")  # CronWorkflow -> workflowTemplateRef rakuten-train
    train = run.node("train")
    assert train.mutexes == [f"{common.NAMESPACE}/{common.TRAINING_MUTEX}"]
    result = json.loads(train.outputs["result"])
    assert run.outputs["decision"] == result["decision"] == "promoted", result
    assert run.outputs["version"] == str(result["version"])
    assert platform.production_version() == run.outputs["version"]
    assert platform.versions() == [run.outputs["version"]]


@contextlib.contextmanager
def prediction_api(platform: Platform, root: Path):
    """The real API (`rakuten-mlops serve`) on a free port: its prediction log is what `drift` reads."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MLFLOW_"))},
        "RAKUTEN_HOME": str(root / "api-home"),
        "RAKUTEN_DATABASE_URL": platform.db_url,
        "MLFLOW_TRACKING_URI": platform.mlflow_url,
        "RAKUTEN_REGISTERED_MODEL": platform.model_name,
        "RAKUTEN_MODEL_POLL_SECONDS": "0",
    }
    api = ManagedProcess(
        "rakuten-mlops serve",
        [VENV_BIN / "rakuten-mlops", "serve", "--host", "127.0.0.1", "--port", str(port)],
        root / "api.log",
        env=env,
        inherit_env=False,
        ready_url=f"http://127.0.0.1:{port}/ready",
    )
    try:
        api.start(timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        api.stop()


def send_to_api(platform: Platform, api: str, drop: Path) -> None:
    """Classify every product of a drop through POST /predict/batch and wait for the prediction log."""
    import httpx
    import pandas as pd

    (x_file,) = drop.glob("X_*.csv")
    frame = pd.read_csv(x_file, index_col=0, keep_default_na=False)
    items = [
        {"designation": d, "description": e or None}
        for d, e in zip(frame.designation, frame.description, strict=True)
    ]
    before = platform.scalar("select count(*) from predictions")
    with httpx.Client(base_url=api, timeout=60) as client:
        for start in range(0, len(items), 500):
            response = client.post("/predict/batch", json={"items": items[start : start + 500]})
            assert response.status_code == 200, response.text[:500]
    logged = before + len(items)
    wait_until(
        lambda: platform.scalar("select count(*) from predictions") >= logged, 30, what="the prediction log"
    )


@NEEDS_LOAD
@NEEDS_TRAIN
@NEEDS_SERVE
@NEEDS_DRIFT
@NEEDS_DECIDE
def test_drift_check_skips_training_without_drift_and_retrains_after_a_drifted_batch(platform, tmp_path):
    """The next two days: the API classifies new products, drift-check runs each night."""
    versions = platform.versions()
    assert len(versions) == 1, "needs the model the weekly training of the previous test promoted"
    first = platform.production_version()
    calm_drop = generate(
        platform.source / "drop-2", *("--rows", "600", "--seed", "3", "--first-productid", "800000000")
    )
    drifted_drop = generate(
        platform.source / "drop-drifted",
        *("--rows", "1500", "--seed", "2", "--first-productid", "900000000"),
        *("--drift", "vocabulary", "--drift-strength", "1.0"),
    )
    with prediction_api(platform, tmp_path) as api:
        # Day 1: products like the training data -> no drift -> the conditional training is skipped.
        send_to_api(platform, api, calm_drop)
        calm = platform.run("drift-check")
        decision = json.loads(calm.node("decide").outputs["decision"])
        assert decision["retrain"] is False, decision
        assert calm.node("retrain").phase == "Skipped"
        assert "retrain.train" not in calm.nodes
        assert platform.versions() == [first] and platform.production_version() == first

        # Day 2: products with a shifted vocabulary -> drift -> decide says retrain -> rakuten-train runs.
        send_to_api(platform, api, drifted_drop)
        drifted = platform.run("drift-check")
    decision = json.loads(drifted.node("decide").outputs["decision"])
    assert decision["retrain"] is True, decision
    assert any("drift" in reason for reason in decision["reasons"]), decision
    assert drifted.node("retrain").phase == "Succeeded"
    assert drifted.node("retrain.train").phase == "Succeeded", (
        "the conditional step ran rakuten-train's template"
    )
    retrained = json.loads(drifted.node("retrain").outputs["result"])
    assert drifted.node("retrain").outputs["decision"] in ("promoted", "rejected")
    assert str(retrained["version"]) != first
    assert platform.versions() == sorted([first, str(retrained["version"])])
