"""Fixtures for the operator tests: a real MLflow server, kmock's emulated Kubernetes API, and
the real operator process (``rakuten-mlops operator run``) between them.

The Kubernetes API server is emulated (kmock) because no cluster can run on this machine;
see ``emulated_api.py`` for what the emulator adds and why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from emulated_api import PEERINGS, EmulatedApiServer, free_port
from operator_harness import wait_until

REPO = Path(__file__).resolve().parents[2]
OPERATOR_DIR = REPO / "operator"
BIN = Path(sys.executable).parent


# --- MLflow ---------------------------------------------------------------------------------


@dataclass
class MlflowServer:
    uri: str
    process: subprocess.Popen

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow 3 tracking + registry server on a free loopback port (lean: one worker)."""
    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--workers",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination",
            str(home / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited: {(home / 'server.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{uri}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 60, 0.5, "the MLflow server")
    yield MlflowServer(uri, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


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


@dataclass
class OperatorProcess:
    process: subprocess.Popen
    log_path: Path
    liveness: str

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


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
) -> Iterator[Callable[..., OperatorProcess]]:
    """Factory: start ``rakuten-mlops operator run`` and wait until its liveness endpoint answers."""
    started: list[OperatorProcess] = []
    logs = tmp_path_factory.mktemp("operator-logs")  # one operator per test: peering pauses twins
    cli = shutil.which("rakuten-mlops", path=str(BIN)) or str(BIN / "rakuten-mlops")

    def start(*extra: str) -> OperatorProcess:
        port = free_port()
        liveness = f"http://127.0.0.1:{port}/healthz"
        log_path = logs / f"operator-{len(started)}.log"
        proc = subprocess.Popen(
            [cli, "operator", "run", "--namespace", namespace, "--liveness", liveness, "--verbose", *extra],
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            env=operator_env,
        )
        op = OperatorProcess(proc, log_path, liveness)
        started.append(op)

        def live() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"operator exited with {proc.returncode}:\n{op.output()[-4000:]}")
            try:
                return httpx.get(liveness, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(live, 60, 0.2, "the operator's liveness endpoint")
        return op

    yield start
    for op in started:
        op.stop()
        # Shown by pytest only when a test failed: what the operator said.
        print(f"--- {op.log_path.name} ---\n{op.output()[-6000:]}")
