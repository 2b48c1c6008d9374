"""Real servers and small real models for the serving tests and the benchmark.

- :func:`register_version`: fit the training package's pipeline on the 429 real sample rows,
  log it with the MLflow sklearn flavour and register it (optionally moving an alias to it).
- :class:`MlflowServer`: ``mlflow server`` on a loopback port (stop/start keeps its store).
- :class:`ApiProcess`: ``rakuten-mlops serve`` in a subprocess, ready when ``/ready`` is 200.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO.parent / "shared" / "data" / "rakuten_sample"
CLI = [sys.executable, "-m", "rakuten_mlops.cli"]
ADMIN_TOKEN = "test-admin-token-5f1c2a"

REALISTIC_PRODUCTS = [
    {
        "designation": "Manette sans fil pour Nintendo Switch Pro - noire",
        "description": "Vibrations HD, batterie.",
    },
    {"designation": "Piscine tubulaire ronde 366 x 76 cm avec pompe de filtration", "description": ""},
    {
        "designation": "Le Petit Prince - Antoine de Saint-Exupéry",
        "description": "Livre d'occasion, bon état.",
    },
    {"designation": "Figurine Dragon Ball Z Son Goku Super Saiyan 18 cm", "productid": 4252011632},
    {"designation": "Coussin décoratif en velours 45x45 cm, gris perle"},
    {
        "designation": "Lot de 100 cartes Pokémon avec 5 brillantes",
        "description": "Cartes officielles françaises.",
    },
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_frame() -> pd.DataFrame:
    """The real labelled rows shipped in shared/ (designation, description, prdtypecode, ...)."""
    x = pd.read_csv(SAMPLE_DIR / "X_sample.csv", index_col=0)
    y = pd.read_csv(SAMPLE_DIR / "Y_sample.csv", index_col=0)
    frame = x.join(y)
    frame["description"] = frame["description"].fillna("").astype(str)
    frame["designation"] = frame["designation"].astype(str)
    return frame


def fit_pipeline(variant: int = 0):
    """The training package's pipeline fitted on the sample (``variant`` changes the fit)."""
    from rakuten_mlops.model import build_pipeline

    frame = sample_frame()
    pipeline = build_pipeline("sgd", alpha=2e-5 * (1 + 4 * variant), random_state=variant)
    return pipeline.fit(frame[["designation", "description"]], frame["prdtypecode"])


def register_version(
    tracking_uri: str, name: str, *, pipeline=None, variant: int = 0, alias: str | None = "production"
) -> str:
    """Log and register one version (fitting one if ``pipeline`` is None); point ``alias`` at it."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    from rakuten_mlops.model.pipeline import trusted_types

    pipeline = pipeline if pipeline is not None else fit_pipeline(variant)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name(f"{name}-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(f"{name}-tests")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name=name,
            skops_trusted_types=trusted_types(),
            pip_requirements=["scikit-learn", "pandas", "ftfy"],  # skips MLflow's slow inference
        )
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "f1_weighted", "0.8")
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def wait_http(url: str, timeout: float, ok=lambda r: r.status_code == 200, proc=None) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while waiting for {url}")
        try:
            response = httpx.get(url, timeout=2)
            if ok(response):
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last})")


class MlflowServer:
    """A real ``mlflow server`` (SQLite store, proxied artifacts) that can be stopped and restarted."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = root
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        cmd = [
            sys.executable, "-m", "mlflow", "server", "--workers", "1",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
        ]  # fmt: skip
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_http(f"{self.uri}/health", timeout, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


class ApiProcess:
    """``rakuten-mlops serve`` as a user runs it, on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90, wait_ready: bool = True) -> ApiProcess:
        cmd = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_http(f"{self.url}/ready" if wait_ready else f"{self.url}/health", timeout, proc=self.proc)
        return self

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]
