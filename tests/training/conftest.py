"""Fixtures of the training tests: products in the data database, and settings of a cluster-like
deployment on the harness's MLflow server with a Postgres store and artifacts proxied to S3."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.support import MlflowServer
from tests.training.factories import insert_products, run_cli


@pytest.fixture
def products(settings):
    """A function that adds products to the settings' data database."""

    def add(frame: pd.DataFrame, split: str | None = None) -> int:
        return insert_products(settings.database_url, frame, split=split)

    return add


@pytest.fixture
def cli(capsys, monkeypatch):
    return lambda *args: run_cli(list(args), capsys, monkeypatch)


@pytest.fixture
def server_settings(
    mlflow_server_on_s3: MlflowServer, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Settings of a cluster-like deployment: Postgres data DB, MLflow server, S3 artifacts behind it.

    The client holds no S3 credentials: artifacts go through the server (proxied)."""
    from rakuten_mlops.settings import Settings, get_settings

    monkeypatch.setenv("RAKUTEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", pg_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_on_s3.uri)
    for var in (
        "MLFLOW_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "RAKUTEN_MODEL_VERSION",
    ):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()
