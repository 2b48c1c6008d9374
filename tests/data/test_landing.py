"""The S3 landing zone against a real S3 server (SeaweedFS): upload, load, drops, bad input, failures."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from rakuten_mlops import s3
from rakuten_mlops.data.generator import generate_frame, write_official_layout
from rakuten_mlops.data.landing import READY_MARKER, load_from_landing, upload_drop
from rakuten_mlops.data.loader import LoadPlan, split_for
from rakuten_mlops.db import engine_for, upgrade
from rakuten_mlops.db.models import LoadBatch, Product
from rakuten_mlops.errors import DataValidationError, ObjectStoreNotFound, ObjectStoreUnavailable

LANDING_BUCKET = "landing"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def landing(s3_server):
    """The landing bucket on the session's S3 server."""
    client = s3_server.client()
    if LANDING_BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=LANDING_BUCKET)
    return s3_server


@pytest.fixture
def aws_env(landing, monkeypatch):
    """This process talks to the server through the standard AWS environment only."""
    for name, value in landing.aws_env().items():
        monkeypatch.setenv(name, value)
    s3.client.cache_clear()
    yield landing
    s3.client.cache_clear()


@pytest.fixture
def zone() -> str:
    return f"s3://{LANDING_BUCKET}/zone-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def drops(tmp_path_factory) -> tuple[Path, Path]:
    """Two sources with disjoint products: 1,000 and 500 rows."""
    first, second = tmp_path_factory.mktemp("drop-a"), tmp_path_factory.mktemp("drop-b")
    write_official_layout(generate_frame(1000, seed=11), first)
    write_official_layout(generate_frame(500, seed=12), second)
    return first, second


def run_cli(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MLFLOW_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "rakuten_mlops.cli", *args],
        env={**base, "RAKUTEN_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def batches(settings) -> list[tuple[str, int, int, int]]:
    upgrade(settings.database_url)
    with engine_for(settings.database_url).connect() as conn:
        rows = conn.execute(
            select(LoadBatch.source, LoadBatch.row_start, LoadBatch.row_end, LoadBatch.source_rows)
            .where(LoadBatch.status == "succeeded")
            .order_by(LoadBatch.id)
        ).all()
    return [tuple(r) for r in rows]


def test_cli_empty_zone_then_upload_then_load(landing, drops, zone, tmp_path):
    env = landing.aws_env()
    empty = run_cli(tmp_path, env, "data", "load", "--source", zone)
    assert empty.returncode == 0, empty.stderr
    assert f"nothing to load yet: no complete drop under {zone}/ at {landing.endpoint}" in empty.stdout

    uploaded = run_cli(tmp_path, env, "data", "upload", str(drops[0]), "--to", zone)
    assert uploaded.returncode == 0, uploaded.stderr
    assert "uploaded 1,000 products" in uploaded.stdout

    loaded = run_cli(tmp_path, env, "data", "load", "--source", zone)
    assert loaded.returncode == 0, loaded.stderr
    assert f"{zone}/: loaded batch 1: 400 products" in loaded.stdout
    assert "400 of 1,000 products" in loaded.stdout


def test_an_empty_bucket_is_nothing_to_load_yet(aws_env, settings):
    bucket = f"empty-{uuid.uuid4().hex[:8]}"
    aws_env.client().create_bucket(Bucket=bucket)
    outcome = load_from_landing(settings, f"s3://{bucket}", LoadPlan())
    assert outcome.results == [] and outcome.summary()[0].startswith(
        f"nothing to load yet: no complete drop under s3://{bucket}/"
    )


def test_two_drops_load_in_name_order_each_as_its_own_source(aws_env, settings, drops, zone):
    upload_drop(drops[1], f"{zone}/2026-12-02")
    upload_drop(drops[0], f"{zone}/2026-12-01")
    plan = LoadPlan(initial_fraction=0.4, batch_rows=600)
    for _ in range(4):
        load_from_landing(settings, zone, plan)
    first, second = f"{zone}/2026-12-01/", f"{zone}/2026-12-02/"
    assert batches(settings) == [
        (first, 0, 400, 1000),
        (first, 400, 1000, 1000),
        (second, 0, 200, 500),
        (second, 200, 500, 500),
    ]
    done = load_from_landing(settings, zone, plan)
    assert done.results == [] and done.summary() == [
        f"nothing to load: the 2 drop(s) under {zone}/ are fully loaded"
    ]
    with engine_for(settings.database_url).connect() as conn:
        products = conn.execute(select(Product.productid, Product.split)).all()
    assert len(products) == 1500
    assert all(split == split_for(pid) for pid, split in products)


def test_load_all_takes_every_drop_to_the_end(aws_env, settings, drops, zone):
    upload_drop(drops[0], f"{zone}/a")
    upload_drop(drops[1], f"{zone}/b")
    outcome = load_from_landing(settings, zone, LoadPlan(load_all=True))
    assert [(r.source, r.rows) for r in outcome.results] == [(f"{zone}/a/", 1000), (f"{zone}/b/", 500)]


def test_a_half_finished_upload_is_not_taken(aws_env, settings, drops, zone):
    """Files without the marker (an upload still running) wait; the marker written last releases them."""
    url = s3.S3Url.parse(zone)
    for path in sorted(drops[0].iterdir()):
        aws_env.client().upload_file(str(path), url.bucket, url.key(path.name))
    waiting = load_from_landing(settings, zone, LoadPlan())
    assert waiting.results == [] and batches(settings) == []
    assert f"waiting: {zone}/ has no {READY_MARKER} marker yet" in "\n".join(waiting.summary())

    upload_drop(drops[0], zone)  # the same files again, now with the marker last
    assert [r.rows for r in load_from_landing(settings, zone, LoadPlan()).results] == [400]


def test_a_drop_replaced_while_read_is_left_for_the_next_run(aws_env, settings, drops, zone):
    upload_drop(drops[0], zone)
    url = s3.S3Url.parse(zone)
    other_x = next(drops[1].glob("X_*.csv"))  # a new X put over the drop after its marker was read
    aws_env.client().upload_file(str(other_x), url.bucket, url.key(other_x.name))
    outcome = load_from_landing(settings, zone, LoadPlan())
    assert outcome.results == [] and batches(settings) == []
    assert "changed while it was read" in "\n".join(outcome.summary())


def test_a_bad_file_is_refused_naming_its_s3_url(aws_env, settings, zone):
    url = s3.S3Url.parse(zone)
    client = aws_env.client()
    client.put_object(Bucket=url.bucket, Key=url.key("X_train_update.csv"), Body=b"a;b;c\n1;2;3\n")
    client.put_object(Bucket=url.bucket, Key=url.key("Y_train_CVw08PX.csv"), Body=b",prdtypecode\n0,10\n")
    client.put_object(Bucket=url.bucket, Key=url.key(READY_MARKER), Body=b"")  # a marker written by hand
    with pytest.raises(DataValidationError) as caught:
        load_from_landing(settings, zone, LoadPlan())
    assert str(caught.value).startswith(f"{zone}/X_train_update.csv, line 1: wrong delimiter")
    assert caught.value.exit_code == 2 and batches(settings) == []


def test_upload_refuses_a_folder_without_the_official_files(tmp_path):
    (tmp_path / "X_train_update.csv").write_text(",designation,description,productid,imageid\n")
    with pytest.raises(DataValidationError, match=r"no Y file \(Y_train_CVw08PX.csv or one Y_\*.csv\)"):
        upload_drop(tmp_path, "s3://landing/never")


def test_bad_credentials_are_one_line_with_exit_6_and_no_secret(landing, zone, tmp_path):
    env = {**landing.aws_env(), "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"}
    res = run_cli(tmp_path, env, "data", "load", "--source", zone)
    assert res.returncode == 6, res.stderr
    assert "refused access" in res.stderr and "AWS_SECRET_ACCESS_KEY" in res.stderr
    assert "wrong-secret-value" not in res.stdout + res.stderr and "Traceback" not in res.stderr


def test_a_missing_bucket_and_an_unreachable_endpoint_are_named(aws_env, settings, monkeypatch):
    with pytest.raises(ObjectStoreNotFound, match="bucket 'no-such-bucket' does not exist") as missing:
        load_from_landing(settings, "s3://no-such-bucket/x", LoadPlan())
    assert missing.value.exit_code == 3
    from tests.support import free_port as _port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_port()}")
    s3.client.cache_clear()
    with pytest.raises(ObjectStoreUnavailable, match="cannot reach S3 at http://127.0.0.1:") as down:
        load_from_landing(settings, "s3://landing/x", LoadPlan())
    assert down.value.exit_code == 6
