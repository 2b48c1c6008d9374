"""The committed YAML's own wiring, run by the local executor with a stand-in ``rakuten-mlops``.

The stand-in only records its arguments and writes the JSON files the real CLI contract
(docs/architecture.md) promises, so these fast tests pin what the cluster will execute:
the argument lists, the files the outputs are read from, the ``when`` on the decision and the
``templateRef`` into ``rakuten-train``. The same flows with the real CLI, Postgres and MLflow
are in test_load_train_and_retrain.py.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from workflows.local_executor import LocalExecutor

from workflows import common

STAND_IN = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STANDIN_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "db": os.environ.get("RAKUTEN_DATABASE_URL"),
                          "mlflow": os.environ.get("MLFLOW_TRACKING_URI"), "home": os.environ.get("RAKUTEN_HOME"),
                          "aws": {{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}}}) + "\\n")
out = args[args.index("--output") + 1] if "--output" in args else None
payload = {{
    "train": {{"version": os.environ.get("STANDIN_VERSION", "1"), "decision": "promoted", "f1_weighted": 0.8}},
    "drift": {{"drift_detected": os.environ.get("STANDIN_RETRAIN") == "true", "severity": "high"}},
    "decide": {{"retrain": os.environ.get("STANDIN_RETRAIN") == "true", "reasons": ["stand-in"]}},
    "estimate": {{"f1_weighted": 0.8, "interval": [0.78, 0.82], "n": 500, "trusted": True}},
}}.get(args[0])
if out and payload is not None:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    json.dump(payload, open(out, "w"))
sys.exit(int(os.environ.get("STANDIN_EXIT_" + args[0].upper(), "0")))
"""


@pytest.fixture
def stand_in(tmp_path, rendered_objects):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "rakuten-mlops"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.jsonl"
    source = tmp_path / "source"
    source.mkdir()

    def make(**settings: str) -> tuple[LocalExecutor, Path]:
        executor = LocalExecutor(
            rendered_objects,
            secrets={common.POSTGRES_SECRET: {"database-url": "postgresql+psycopg2://u@db/rakuten"}},
            config_maps={
                common.CONFIG_MAP: {
                    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
                    "STANDIN_LOG": str(log),
                    **settings,
                }
            },
            claims={common.SOURCE_DATA_CLAIM: source},
            path=[bin_dir],
            workdir=tmp_path,
            log=lambda _: None,
        )
        return executor, log

    return make


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize(("retrain", "phase"), [("true", "Succeeded"), ("false", "Skipped")])
def test_drift_check_runs_training_only_when_decide_says_so(stand_in, retrain, phase):
    executor, log = stand_in(STANDIN_RETRAIN=retrain, STANDIN_VERSION="7")
    run = executor.submit("drift-check", {"window": "3d", "model": "logreg"})
    assert run.phase == "Succeeded", run.summary()
    assert run.node("retrain").phase == phase
    commands = [c["args"][0] for c in calls(log)]
    assert sorted(commands[:2]) == ["drift", "estimate"]  # in parallel, both before decide
    assert commands[2:] == (["decide", "train"] if retrain == "true" else ["decide"])
    args = {c["args"][0]: c["args"] for c in calls(log)}
    assert args["drift"][:3] == ["drift", "--window", "3d"]
    assert args["estimate"][:3] == ["estimate", "--window", "1d"]
    if retrain == "true":
        train_args = args["train"]
        assert train_args[:4] == ["train", "--model", "logreg", "--promote"]
        assert run.node("retrain").outputs["decision"] == "promoted"
        assert run.node("retrain").outputs["version"] == "7"
        assert run.node("retrain.train").mutexes == [f"{common.NAMESPACE}/{common.TRAINING_MUTEX}"]


def test_every_step_gets_the_database_and_tracking_urls_and_a_private_home(stand_in):
    executor, log = stand_in(STANDIN_RETRAIN="true")
    assert executor.submit("drift-check").phase == "Succeeded"
    seen = calls(log)
    assert len(seen) == 4
    assert {c["db"] for c in seen} == {"postgresql+psycopg2://u@db/rakuten"}
    assert {c["mlflow"] for c in seen} == {"http://mlflow:5000"}
    homes = [c["home"] for c in seen]
    assert len(set(homes)) == 4, "each pod has its own emptyDir: nothing leaks between steps"
    assert all(h.endswith("/rakuten") and not h.startswith("/tmp/rakuten") for h in homes)


def test_incremental_load_passes_batch_fraction_or_rows(stand_in):
    executor, log = stand_in()
    executor.submit("incremental-load")
    executor.submit(
        "incremental-load", {"batch-unit": "rows", "batch-size": "2000", "source": "/data/source/x"}
    )
    first, second = (c["args"] for c in calls(log))
    source_dir = str(executor.claims[common.SOURCE_DATA_CLAIM])
    assert first == [
        "data", "load", "--source", common.LANDING_URL, "--initial-fraction", "0.4", "--batch-fraction", "0.03"
    ]  # fmt: skip
    assert second[-2:] == ["--batch-rows", "2000"] and second[3] == os.path.join(source_dir, "x")
    with pytest.raises(Exception, match="not one of"):
        executor.submit("incremental-load", {"batch-unit": "percent"})


def test_bad_input_is_not_retried_but_a_failing_training_is(stand_in):
    executor, log = stand_in(STANDIN_EXIT_DATA="2", STANDIN_EXIT_TRAIN="1")
    load = executor.submit("incremental-load")
    assert load.phase == "Failed" and len(load.node("load").attempts) == 1
    train = executor.submit("rakuten-train")
    assert train.phase == "Failed" and len(train.node("train").attempts) == 3


def test_weekly_cron_runs_the_template_with_its_own_arguments(stand_in):
    executor, log = stand_in(STANDIN_VERSION="3")
    run = executor.submit("rakuten-train-weekly")
    assert run.phase == "Succeeded", run.summary()
    assert run.outputs["version"] == "3" and run.outputs["decision"] == "promoted"
    assert calls(log)[0]["args"][:3] == ["train", "--model", "sgd"]


def test_only_the_load_step_gets_the_landing_zone_keys_and_endpoint(stand_in):
    executor, log = stand_in(
        STANDIN_RETRAIN="true",
        **{common.LANDING_ENDPOINT_KEY: "http://minio:9000", common.LANDING_REGION_KEY: "us-east-1"},
    )
    executor.secrets[common.LANDING_SECRET] = {"access-key-id": "AK", "secret-access-key": "SK"}
    assert executor.submit("incremental-load").phase == "Succeeded"
    assert executor.submit("drift-check").phase == "Succeeded"
    load, *others = calls(log)
    assert load["aws"] == {
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "SK",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    assert sorted(c["args"][0] for c in others) == ["decide", "drift", "estimate", "train"]
    assert all(c["aws"] == {} for c in others)


def test_load_step_runs_without_landing_keys(stand_in):
    """A PVC source or a pod identity: the optional references resolve to nothing."""
    executor, log = stand_in()
    assert executor.submit("incremental-load").phase == "Succeeded"
    assert calls(log)[0]["aws"] == {}
