"""Fixtures of the training tests: products in the data database, a real SeaweedFS S3 server and a
real MLflow server (Postgres backend store, artifacts proxied to S3), each shared per session."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from training_helpers import (
    VENV_BIN,
    MlflowServer,
    S3Server,
    free_port,
    insert_products,
    run_cli,
    stop_process,
    wait_http,
)


@pytest.fixture
def products(settings):
    """A function that adds products to the settings' data database."""

    def add(frame: pd.DataFrame, split: str | None = None) -> int:
        return insert_products(settings.database_url, frame, split=split)

    return add


@pytest.fixture
def cli(capsys, monkeypatch):
    return lambda *args: run_cli(list(args), capsys, monkeypatch)


@pytest.fixture(scope="session")
def mlflow_backend_db(pg_server: str) -> Iterator[str]:
    """A Postgres database for the MLflow server's backend store, dropped at the end."""
    import sqlalchemy as sa

    name = f"rk_mlflow_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield pg_server.rsplit("/", 1)[0] + f"/{name}"  # postgresql+psycopg2: the driver installed here
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def mlflow_server(s3_server: S3Server, mlflow_backend_db: str, tmp_path_factory) -> Iterator[MlflowServer]:
    """`mlflow server` on a free loopback port: Postgres backend store, artifacts proxied to S3."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    log = root / "mlflow.log"
    args = [
        str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", mlflow_backend_db,
        "--artifacts-destination", f"s3://{s3_server.bucket}/mlflow",
        "--serve-artifacts",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 120, log)
        yield MlflowServer(f"http://127.0.0.1:{port}", s3_server)
    finally:
        stop_process(proc)


@pytest.fixture
def server_settings(
    mlflow_server: MlflowServer, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Settings of a cluster-like deployment: Postgres data DB, MLflow server, S3 artifacts behind it.

    The client holds no S3 credentials: artifacts go through the server (proxied)."""
    from rakuten_mlops.settings import Settings, get_settings

    monkeypatch.setenv("RAKUTEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", pg_url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
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
