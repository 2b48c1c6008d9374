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
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from emulated_api import DEPLOYMENTS, PEERINGS, EmulatedApiServer, free_port

REPO = Path(__file__).resolve().parents[2]
OPERATOR_DIR = REPO / "operator"
BIN = Path(sys.executable).parent


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(interval)


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
            str(BIN / "mlflow"), "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination", str(home / "artifacts"),
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
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
                name, source=model_source.model_uri, run_id=model_source.run_id, model_id=model_source.model_id
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


def api_deployment(name: str, version: str | None, replicas: int = 2) -> dict[str, Any]:
    """A serving Deployment as the chart renders it (container ``api``), rolled out and ready."""
    env = [{"name": "RAKUTEN_MODEL_POLL_SECONDS", "value": "0"}]
    annotations = {}
    if version is not None:
        env.append({"name": "RAKUTEN_MODEL_VERSION", "value": version})
        annotations["mlops.rakuten.io/model-version"] = version
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {
                    "containers": [
                        {"name": "api", "image": "rakuten-app:dev", "args": ["serve"], "env": env,
                         "ports": [{"containerPort": 8000}]},
                        {"name": "log-shipper", "image": "busybox", "args": ["sleep", "infinity"]},
                    ]
                },
            },
        },
    }


def served_model(name: str, deployment: str, model: str, mlflow_uri: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlops.rakuten.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {"registeredModel": model, "alias": "production", "deployment": deployment,
                 "mlflowTrackingUri": mlflow_uri, **spec},
    }


class DeploymentController:
    """Plays the Deployment controller of a real cluster: writes status for the current generation."""

    def __init__(self, api: EmulatedApiServer, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = api, namespace, name

    def report(self, *, updated: int, available: int, total: int | None = None, **extra: Any) -> None:
        current = self.api.get(DEPLOYMENTS, self.namespace, self.name)
        replicas = current["spec"]["replicas"]
        status = {
            "observedGeneration": current["metadata"]["generation"],
            "replicas": total if total is not None else replicas,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "readyReplicas": available,
            "unavailableReplicas": max(replicas - available, 0),
            **extra,
        }
        self.api.patch(DEPLOYMENTS, self.namespace, self.name, {"status": status}, subresource="status")

    def rolled_out(self) -> None:
        replicas = self.api.get(DEPLOYMENTS, self.namespace, self.name)["spec"]["replicas"]
        self.report(updated=replicas, available=replicas)


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
            stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=operator_env,
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
