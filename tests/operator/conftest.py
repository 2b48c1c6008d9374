"""Fixtures for the operator tests: models on the session's MLflow server, kmock's emulated
Kubernetes API, and the real operator process (``rakuten-mlops operator run``) between them.

The Kubernetes API server is emulated (kmock) because no cluster can run on this machine;
see ``emulated_api.py`` for what the emulator adds and why.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.operator.emulated_api import PEERINGS, EmulatedApiServer
from tests.support import REPO, VENV_BIN, ManagedProcess, MlflowServer, free_port

OPERATOR_DIR = REPO / "operator"


# --- MLflow ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_source(mlflow_server: MlflowServer) -> Any:
    """One tiny logged sklearn model (a DummyClassifier) to register versions from (ModelInfo)."""
    import mlflow
    import numpy as np
    from sklearn.dummy import DummyClassifier

    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_experiment("operator-tests")
    model = DummyClassifier(strategy="prior").fit(np.zeros((4, 1)), [10, 10, 40, 50])
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model")
    return info


@pytest.fixture
def registered_model(mlflow_server: MlflowServer, model_source: Any) -> Callable[[int], str]:
    """Factory: a fresh registered model with ``n`` versions (1..n); returns its name."""

    def make(n: int) -> str:
        client = mlflow_server.client()
        name = f"rakuten_classifier_{uuid.uuid4().hex[:6]}"
        client.create_registered_model(name)
        for _ in range(n):
            client.create_model_version(
                name,
                source=model_source.model_uri,
                run_id=model_source.run_id,
                model_id=model_source.model_id,
            )
        return name

    return make


@pytest.fixture(scope="session")
def delivery_models(mlflow_server: MlflowServer) -> dict[str, Any]:
    """The progressive-delivery tests' stable fit and candidates, logged once (delivery_harness.py)."""
    from tests.operator.delivery_harness import SLOW_SECONDS, log_delivery_models

    return log_delivery_models(mlflow_server.uri, SLOW_SECONDS)


# --- emulated Kubernetes API ----------------------------------------------------------------


@pytest.fixture(scope="module")
def api_server() -> Iterator[EmulatedApiServer]:
    server = EmulatedApiServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def namespace(api_server: EmulatedApiServer) -> str:
    """A namespace with the KopfPeering object the operator needs (operator/peering.yaml)."""
    ns = f"rk-{uuid.uuid4().hex[:6]}"
    docs = list(yaml.safe_load_all((OPERATOR_DIR / "peering.yaml").read_text()))
    peering = next(doc for doc in docs if doc["kind"] == "KopfPeering")
    peering["metadata"]["namespace"] = ns
    api_server.create(PEERINGS, ns, peering)
    return ns


# --- the operator process -------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator_env(api_server: EmulatedApiServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the operator process: kubeconfig to the emulator, a data DB for model_events."""
    from rakuten_mlops.db import upgrade

    home = tmp_path_factory.mktemp("operator")
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(api_server.kubeconfig()))
    db_url = f"sqlite:///{home / 'data.db'}"
    upgrade(db_url)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KUBERNETES_", "RAKUTEN_"))}
    env.update(
        KUBECONFIG=str(kubeconfig),
        RAKUTEN_HOME=str(home / "home"),
        RAKUTEN_DATABASE_URL=db_url,
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def start_operator(
    operator_env: dict[str, str], namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ManagedProcess]]:
    """Factory: start ``rakuten-mlops operator run`` and wait until its liveness endpoint answers."""
    started: list[ManagedProcess] = []
    logs = tmp_path_factory.mktemp("operator-logs")  # one operator per test: peering pauses twins
    cli = shutil.which("rakuten-mlops", path=str(VENV_BIN)) or str(VENV_BIN / "rakuten-mlops")

    def start(*extra: str) -> ManagedProcess:
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        op = ManagedProcess(
            "rakuten-mlops operator",
            [cli, "operator", "run", "--namespace", namespace, "--liveness", liveness, "--verbose", *extra],
            logs / f"operator-{len(started)}.log",
            env=operator_env,
            inherit_env=False,
            ready_url=liveness,
        )
        started.append(op)
        return op.start(timeout=60)

    yield start
    for op in started:
        op.stop()
