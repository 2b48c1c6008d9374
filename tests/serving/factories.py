"""Small real models and the API process of the serving tests.

- :func:`fit_pipeline`, :func:`log_pipeline`, :func:`register_logged`: fit the training package's
  pipeline on the 429 real sample rows, log it once with the MLflow sklearn flavour, and register
  versions of it (optionally moving an alias to the new one); :func:`register_version` does all three.
- :class:`ApiProcess`: ``rakuten-mlops serve`` in a subprocess, ready when ``/ready`` is 200;
  :func:`serve_own_model` starts one on a model registered for it alone.
- :class:`RegisteredModel`: what the ``registered_model`` fixture gives, with ``move_alias``.
- :func:`prediction_rows`, :func:`wait_rows`: the prediction log's rows, now or once they arrived.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from tests.support import CLI, SAMPLE_DIR, ManagedProcess, free_port

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


def log_pipeline(tracking_uri: str, pipeline):
    """Log a fitted pipeline once with the MLflow sklearn flavour; versions are registered from it."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    from rakuten_mlops.model.pipeline import trusted_types

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name("serving-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("serving-tests")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id):
        return mlflow.sklearn.log_model(
            pipeline,
            name="model",
            skops_trusted_types=trusted_types(),
            pip_requirements=["scikit-learn", "pandas", "ftfy"],  # skips MLflow's slow inference
        )


def register_logged(tracking_uri: str, name: str, logged, *, alias: str | None = "production") -> str:
    """A new version of ``name`` (registered on first use) from a logged model; ``alias`` points at it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    created = client.create_model_version(
        name, source=logged.model_uri, run_id=logged.run_id, model_id=logged.model_id
    )
    version = str(created.version)
    client.set_model_version_tag(name, version, "f1_weighted", "0.8")
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def register_version(
    tracking_uri: str, name: str, *, pipeline=None, variant: int = 0, alias: str | None = "production"
) -> str:
    """Log and register one version (fitting one if ``pipeline`` is None); point ``alias`` at it."""
    logged = log_pipeline(tracking_uri, pipeline if pipeline is not None else fit_pipeline(variant))
    return register_logged(tracking_uri, name, logged, alias=alias)


class ApiProcess(ManagedProcess):
    """``rakuten-mlops serve`` as a user runs it, on a free loopback port; stopped as a user
    stops it (SIGTERM to the main process, which shuts its workers down)."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        super().__init__("rakuten-mlops serve", cmd, log_path, env=env, group_stop=False)

    def start(self, timeout: float = 90, wait_ready: bool = True) -> ApiProcess:
        self.ready_url = f"{self.url}/ready" if wait_ready else f"{self.url}/health"
        super().start(timeout)
        return self

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit code."""
        return self.stop(grace=timeout) or 0

    def log(self) -> str:
        return self.log_tail(5000)


def serve_own_model(tracking_uri: str, logged, home: Path, **env: str) -> ApiProcess:
    """A started API serving a registered model of its own (``logged``, as its version 1), with a
    SQLite prediction log under ``home``; ``env`` adds settings."""
    name = f"rakuten_classifier_{uuid.uuid4().hex[:8]}"
    register_logged(tracking_uri, name, logged)
    settings = {
        "RAKUTEN_HOME": str(home),
        "RAKUTEN_DATABASE_URL": f"sqlite:///{home / 'data.db'}",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "RAKUTEN_REGISTERED_MODEL": name,
        "RAKUTEN_MODEL_POLL_SECONDS": "0",
    }
    return ApiProcess({**settings, **env}, home / "api.log").start()


@dataclass
class RegisteredModel:
    """A registered model of the session's MLflow server and its two versions."""

    name: str
    tracking_uri: str
    versions: tuple[str, str]

    def move_alias(self, version: str, alias: str = "production") -> None:
        from mlflow import MlflowClient

        MlflowClient(
            tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
        ).set_registered_model_alias(self.name, alias, version)


def prediction_rows(database_url: str) -> list[sa.Row]:
    """The prediction log's rows, oldest first (none while the table does not exist)."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("select * from predictions order by id")))
    except sa.exc.ProgrammingError:  # table not created yet
        return []
    finally:
        engine.dispose()


def wait_rows(database_url: str, count: int, timeout: float = 10) -> list[sa.Row]:
    """The prediction log's rows once it holds ``count`` of them, or what it holds after ``timeout``."""
    deadline = time.monotonic() + timeout
    rows = prediction_rows(database_url)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = prediction_rows(database_url)
    return rows
