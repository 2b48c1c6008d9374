"""Connecting to the registry sets MLflow's URI in this process only: the processes it starts
afterwards derive their MLflow from their own settings, as they would have without it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rakuten_mlops.settings import Settings

pytestmark = pytest.mark.slow

URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
CHILD = "from rakuten_mlops.settings import Settings; print(Settings().mlflow_tracking_uri)"


def child_mlflow(home) -> str:
    """The MLflow URI of a process this one starts with ``RAKUTEN_HOME=home`` and its own environment."""
    env = {**os.environ, "RAKUTEN_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_connect_leaves_the_environment_of_later_child_processes_alone(mlflow_server, tmp_path, monkeypatch):
    import mlflow

    from rakuten_mlops.registry import connect

    for name in URI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAKUTEN_HOME", str(tmp_path / "parent"))
    client = connect(Settings(mlflow_tracking_uri=mlflow_server.uri))

    # this process uses the server: the client, and MLflow's process-wide URIs (run logging, models:/)
    assert client.search_experiments() is not None
    assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == mlflow_server.uri
    # the environment is as it was, so a child with a home of its own gets that home's MLflow
    assert {name: os.environ.get(name) for name in URI_VARIABLES} == dict.fromkeys(URI_VARIABLES)
    child_home = tmp_path / "child"
    assert child_mlflow(child_home) == f"sqlite:///{child_home / 'mlflow.db'}"


def test_connect_keeps_a_uri_the_environment_already_named(mlflow_server, tmp_path, monkeypatch):
    from rakuten_mlops.registry import connect

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("RAKUTEN_HOME", str(tmp_path / "home"))
    connect(Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'elsewhere.db'}"))
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_server.uri
    assert "MLFLOW_REGISTRY_URI" not in os.environ
