"""The rendered ``incremental-load`` reads the landing zone by default: a real SeaweedFS S3 server,
the real ``rakuten-mlops`` CLI, a real Postgres and MLflow server.

The local executor runs the committed YAML as the cluster would: its default ``source``
(``s3://landing/drops``), the landing keys from the Secret and the endpoint from the ConfigMap
(the chart's names stood in for by the test's values). An empty landing zone is a success, and
a drop put there with ``rakuten-mlops data upload`` is loaded by the next run.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest
import sqlalchemy as sa
from workflows.local_executor import LocalExecutor

from tests.support import VENV_BIN
from workflows import common

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(600)]

BUCKET, PREFIX = common.LANDING_URL.removeprefix("s3://").split("/", 1)


@pytest.fixture
def landing(s3_server):
    """The default landing zone's bucket, with nothing under its prefix."""
    client = s3_server.client()
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    return s3_server


def test_incremental_load_succeeds_on_an_empty_landing_zone_then_loads_an_uploaded_drop(
    rendered_objects, landing, pg_url, mlflow_server, tmp_path
):
    lines: list[str] = []
    executor = LocalExecutor(
        rendered_objects,
        secrets={
            common.POSTGRES_SECRET: {"database-url": pg_url},
            common.LANDING_SECRET: {
                "access-key-id": landing.access_key,
                "secret-access-key": landing.secret_key,
            },
        },
        config_maps={
            common.CONFIG_MAP: {
                "MLFLOW_TRACKING_URI": mlflow_server.uri,
                "RAKUTEN_REGISTERED_MODEL": f"wf_landing_{uuid.uuid4().hex[:8]}",
                common.LANDING_ENDPOINT_KEY: landing.endpoint,
                common.LANDING_REGION_KEY: "us-east-1",
            }
        },
        claims={common.SOURCE_DATA_CLAIM: tmp_path / "unused-claim"},
        path=[VENV_BIN],
        workdir=tmp_path,
        log=lines.append,
    )
    (tmp_path / "unused-claim").mkdir()
    cli = str(VENV_BIN / "rakuten-mlops")
    subprocess.run(
        [cli, "db", "upgrade"], env={"RAKUTEN_DATABASE_URL": pg_url, "PATH": str(VENV_BIN)}, check=True
    )

    empty = executor.submit("incremental-load")
    assert empty.phase == "Succeeded", empty.summary() + "\n".join(lines[-30:])
    out = empty.node("load").attempts[-1].stdout
    assert "nothing to load yet" in out and common.LANDING_URL in out, out

    drop = tmp_path / "drop"
    subprocess.run([cli, "data", "generate", "--rows", "1500", "--seed", "4", "--out", str(drop)], check=True)
    upload = subprocess.run(
        [cli, "data", "upload", str(drop), "--to", f"{common.LANDING_URL}/2026-12-06"],
        env={"PATH": str(VENV_BIN), "HOME": str(tmp_path), **landing.aws_env()},
        capture_output=True,
        text=True,
    )
    assert upload.returncode == 0, upload.stdout + upload.stderr

    loaded = executor.submit("incremental-load")
    assert loaded.phase == "Succeeded", loaded.summary() + "\n".join(lines[-30:])
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM products")).scalar_one()
    engine.dispose()
    assert rows == 600, "the first run loads initial-fraction 0.4 of the 1,500-row drop"
