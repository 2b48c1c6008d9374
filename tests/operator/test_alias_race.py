"""A promotion racing the operator's rollback never loses the newer promotion.

Both sides run their real code: ``training.registry.promote`` (the gate, version 3 against
production) and ``ModelRollout.step`` (a rollout of version 2 that timed out, so the operator
pins version 1 back and moves the alias back). They share a real MLflow server and a real
Postgres (the registry lock and ``model_events``). The Kubernetes API the operator patches is
kmock's emulated API server, because no cluster runs on this machine.

Each round forces one interleaving by pausing a side just before it takes the registry lock:
the promotion lands between the operator's alias read and its move, or the rollback lands
between the promotion's scoring and its move; a third kind lets both run freely.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import pytest
import sqlalchemy as sa
import yaml

from rakuten_mlops.registry import ModelRegistry
from rakuten_operator.reconcile import ModelRollout
from rakuten_operator.rollout import ServedModelSpec
from tests.operator.emulated_api import DEPLOYMENTS, SERVEDMODELS
from tests.operator.operator_harness import DeploymentController, api_deployment, served_model

#: Rounds per interleaving: the forced ones are deterministic, the free ones vary with timing.
ROUNDS = {"promotion-first": 2, "rollback-first": 2, "free": 6}
SCORES = {"1": 0.80, "2": 0.85, "3": 0.90}  # version 3 passes the gate against 1 and against 2


@pytest.fixture
def race_env(pg_url, api_server, tmp_path, monkeypatch):
    """Postgres with a few test-split products; the process's Kubernetes client on the emulator."""
    from rakuten_mlops.db import session_scope, upgrade
    from rakuten_mlops.db.models import LoadBatch, Product
    from rakuten_operator import cluster

    upgrade(pg_url)
    with session_scope(pg_url) as session:
        batch = LoadBatch(source="race", source_digest="0" * 64, row_start=0, row_end=4, row_count=4, status="succeeded")  # fmt: skip
        session.add(batch)
        session.flush()
        session.add_all(
            Product(
                productid=i,
                designation=f"livre {i}",
                description="",
                prdtypecode=code,
                split="test",
                batch_id=batch.id,
                source_row=i,
            )  # fmt: skip
            for i, code in enumerate((10, 10, 40, 50))
        )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(api_server.kubeconfig()))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("RAKUTEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", pg_url)
    for var in ("RAKUTEN_MIN_F1", "RAKUTEN_MIN_GAIN", "RAKUTEN_MODEL_VERSION"):
        monkeypatch.delenv(var, raising=False)
    cluster._api_client.cache_clear()
    yield pg_url
    cluster._api_client.cache_clear()


class Interleaving:
    """Pauses a thread at its first registry lock of the round until an event of the other side."""

    def __init__(self, order: str) -> None:
        self.arrived = {side: threading.Event() for side in ("operator", "promotion")}
        self.done = {side: threading.Event() for side in ("operator", "promotion")}
        self.waits = {
            "promotion-first": {"operator": self.done["promotion"], "promotion": self.arrived["operator"]},
            "rollback-first": {"promotion": self.done["operator"], "operator": self.arrived["promotion"]},
            "free": {},
        }[order]

    def wrap(self, original):
        @contextmanager
        def locked(registry: ModelRegistry) -> Iterator:
            side = threading.current_thread().name
            if side in self.arrived and not self.arrived[side].is_set():
                self.arrived[side].set()
                if side in self.waits:
                    assert self.waits[side].wait(60), f"{side} waited for the other side in vain"
            with original(registry) as txn:
                yield txn

        return locked

    def run(self, side: str, work, errors: list) -> threading.Thread:
        def target() -> None:
            try:
                work()
            except BaseException as exc:  # reported by the test, not lost in the thread
                errors.append((side, exc))
            finally:
                self.arrived[side].set()
                self.done[side].set()

        return threading.Thread(target=target, name=side)


def events(db_url: str, model: str) -> list[tuple[str, str, str | None]]:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("select event_type, version, previous_version from model_events where model_name = :m order by id"),
            {"m": model},
        ).all()  # fmt: skip
    engine.dispose()
    return [tuple(r) for r in rows]


def history(db_url: str, model: str) -> list[str]:
    from rakuten_mlops.training.registry import production_history

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        stack = production_history(conn, model)
    engine.dispose()
    return stack


EXPECTED_ROWS = {  # model_events after the two rows of the set-up, per forced order
    "promotion-first": [("promoted", "3", "2"), ("rollout_failed", "2", "1")],
    "rollback-first": [("rollout_failed", "2", "1"), ("rollback", "1", "2"), ("promoted", "3", "1")],
}


def failed_rollout_of_2(round_no: int, db_url: str, api_server, namespace: str, mlflow_server, model: str):
    """Production is version 2, promoted after 1, and its rollout in the Deployment timed out.

    Returns the promotion's settings and the operator's call, both ready to run.
    """
    from rakuten_mlops.db import record_model_event
    from rakuten_mlops.settings import Settings
    from rakuten_mlops.training.dataset import load_test_set
    from rakuten_mlops.training.registry import remember_score
    from rakuten_operator.cluster import Cluster

    mlflow_server.client().set_registered_model_alias(model, "production", "2")
    for version, previous in (("1", None), ("2", "1")):
        record_model_event(db_url, "promoted", model, version=version, previous_version=previous, decision="promoted")  # fmt: skip
    settings = Settings().model_copy(
        update={"mlflow_tracking_uri": mlflow_server.uri, "registered_model": model}
    )
    test = load_test_set(settings)
    for version, score in SCORES.items():
        remember_score(settings, version, test, score)  # the gate compares these: no model download
    deployment, served = f"api-race-{round_no}", f"race-{round_no}"
    api_server.create(DEPLOYMENTS, namespace, api_deployment(deployment, "2"))
    DeploymentController(api_server, namespace, deployment).report(updated=1, available=2, total=3)
    api_server.create(SERVEDMODELS, namespace, served_model(served, deployment, model, mlflow_server.uri))
    spec = ServedModelSpec(deployment=deployment, registered_model=model, mlflow_tracking_uri=mlflow_server.uri, rollout_timeout_seconds=1)  # fmt: skip
    status = {"phase": "RollingOut", "desiredVersion": "2", "previousVersion": "1", "servedVersion": "1",
              "rolloutStartedAt": "2026-01-01T00:00:00Z"}  # fmt: skip
    rollout = ModelRollout(served, namespace, Cluster(namespace), lambda *a: None, db_url=db_url)
    return settings, partial(rollout.step, spec, status), deployment


def race(order: str, settings, operator_step, monkeypatch) -> list:
    """Run the promotion of version 3 and the operator's step in two threads; the decisions."""
    from rakuten_mlops.training.registry import promote

    original = ModelRegistry.locked
    interleaving = Interleaving(order)
    monkeypatch.setattr(ModelRegistry, "locked", interleaving.wrap(original))
    errors: list = []
    decisions: list = []
    threads = [
        interleaving.run("operator", operator_step, errors),
        interleaving.run("promotion", lambda: decisions.append(promote(settings, "3", actor="race")), errors),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    monkeypatch.setattr(ModelRegistry, "locked", original)
    assert errors == [], (order, errors)
    return decisions


@pytest.mark.slow
def test_a_promotion_racing_the_operator_rollback_is_never_overwritten(
    race_env, api_server, namespace, mlflow_server, registered_model, monkeypatch
):
    db_url = race_env
    for round_no, order in enumerate(o for o, n in ROUNDS.items() for _ in range(n)):
        model = registered_model(3)
        settings, operator_step, deployment = failed_rollout_of_2(
            round_no, db_url, api_server, namespace, mlflow_server, model
        )
        decisions = race(order, settings, operator_step, monkeypatch)

        alias = mlflow_server.client().get_model_version_by_alias(model, "production").version
        rows = events(db_url, model)
        where = f"round {round_no} ({order}): {rows}; gate: {decisions[0].reasons}"
        assert alias == "3" and decisions[0].promoted, f"the promotion of 3 was overwritten in {where}"
        assert history(db_url, model)[-1] == alias, f"history and alias differ in {where}"
        if order in EXPECTED_ROWS:  # free runs: the operator may also have seen 3 first and rolled it out
            assert rows[2:] == EXPECTED_ROWS[order], where
            pod = api_server.get(DEPLOYMENTS, namespace, deployment)["spec"]["template"]["spec"]
            assert {"name": "RAKUTEN_MODEL_VERSION", "value": "1"} in pod["containers"][0]["env"]
