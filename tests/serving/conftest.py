"""Fixtures of the serving tests: registered models on the session's MLflow server, API processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serving.factories import (
    ADMIN_TOKEN,
    ApiProcess,
    RegisteredModel,
    fit_pipeline,
    log_pipeline,
    register_logged,
    serve_own_model,
)
from tests.support import MlflowServer


@pytest.fixture(scope="session")
def fitted_pipelines():
    """Two fits that predict differently (version 1 and version 2 of the tests' models)."""
    return fit_pipeline(0), fit_pipeline(1)


@pytest.fixture(scope="session")
def logged_pipelines(mlflow_server: MlflowServer, fitted_pipelines):
    """The two fits logged once per session; each test's registered versions point at them."""
    return tuple(log_pipeline(mlflow_server.uri, pipeline) for pipeline in fitted_pipelines)


@pytest.fixture
def registered_model(mlflow_server: MlflowServer, logged_pipelines) -> RegisteredModel:
    """A fresh registered model with two versions; ``production`` points at the first."""
    name = f"rakuten_classifier_{uuid.uuid4().hex[:8]}"
    v1 = register_logged(mlflow_server.uri, name, logged_pipelines[0])
    v2 = register_logged(mlflow_server.uri, name, logged_pipelines[1], alias=None)
    return RegisteredModel(name, mlflow_server.uri, (v1, v2))


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    """Start ``rakuten-mlops serve`` subprocesses; all are stopped after the test."""
    started: list[ApiProcess] = []

    def start(model: RegisteredModel, database_url: str, *, workers: int = 1, wait_ready: bool = True, **env):
        base = {
            "RAKUTEN_HOME": str(tmp_path / "home"),
            "RAKUTEN_DATABASE_URL": database_url,
            "MLFLOW_TRACKING_URI": model.tracking_uri,
            "RAKUTEN_REGISTERED_MODEL": model.name,
            "RAKUTEN_MODEL_POLL_SECONDS": "0.5",
            "RAKUTEN_ADMIN_TOKEN": ADMIN_TOKEN,
            "RAKUTEN_LOG_LEVEL": "INFO",
        }
        base.update({k.upper(): str(v) for k, v in env.items()})
        api = ApiProcess(base, tmp_path / f"api-{len(started)}.log", workers=workers)
        started.append(api)
        return api.start(wait_ready=wait_ready)

    yield start
    for api in started:
        api.terminate()


@pytest.fixture(scope="session")
def shared_api(mlflow_server, logged_pipelines, tmp_path_factory):
    """One API process for the bad-input and schema tests (SQLite prediction log)."""
    api = serve_own_model(mlflow_server.uri, logged_pipelines[0], tmp_path_factory.mktemp("shared-api"))
    yield api
    api.terminate()
