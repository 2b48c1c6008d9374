"""Batch scoring from and to S3 (a real SeaweedFS server): object in, object out, resume from S3 parts."""

from __future__ import annotations

import io
import uuid

import pandas as pd
import pytest

from rakuten_mlops import s3
from rakuten_mlops.errors import DataValidationError, ObjectStoreNotFound
from rakuten_mlops.scoring.job import score_catalogue
from tests.scoring.factories import CATALOGUE_ROWS, CHUNK_ROWS

pytestmark = pytest.mark.slow

BUCKETS = ("score-landing", "score-results")


@pytest.fixture
def aws_env(s3_server, monkeypatch):
    """Both buckets exist; this process reaches the server through the standard AWS environment only."""
    client = s3_server.client()
    existing = [b["Name"] for b in client.list_buckets()["Buckets"]]
    for bucket in BUCKETS:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
    for name, value in s3_server.aws_env().items():
        monkeypatch.setenv(name, value)
    s3.client.cache_clear()
    yield client
    s3.client.cache_clear()


class Crash(Exception):
    pass


def test_scores_an_s3_catalogue_into_an_s3_object_and_resumes_from_s3_parts(
    registry, catalogue, tmp_path, aws_env
):
    run = uuid.uuid4().hex[:8]
    aws_env.upload_file(str(catalogue), "score-landing", f"{run}/X_catalogue.csv")
    source, output = f"s3://score-landing/{run}/X_catalogue.csv", f"s3://score-results/{run}/scores.parquet"
    settings = registry.settings(tmp_path / "home")

    def crash_after_two(done):
        if done.index == 1:
            raise Crash

    with pytest.raises(Crash):
        score_catalogue(settings, source, output, chunk_rows=CHUNK_ROWS, on_chunk=crash_after_two)
    keys = [o["Key"] for o in aws_env.list_objects_v2(Bucket="score-results", Prefix=run).get("Contents", [])]
    assert f"{run}/scores.parquet" not in keys  # the output object is put only at the end
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == [
        "manifest.json", "part-000000.parquet", "part-000001.parquet",
    ]  # fmt: skip
    assert all(k.startswith(f"{run}/.scores.parquet.work/") for k in keys)

    result = score_catalogue(settings, source, output, chunk_rows=CHUNK_ROWS)
    assert (result.rows, result.chunks, result.reused_chunks) == (CATALOGUE_ROWS, 4, 2)
    keys = [o["Key"] for o in aws_env.list_objects_v2(Bucket="score-results", Prefix=run)["Contents"]]
    assert keys == [f"{run}/scores.parquet"]  # the work prefix is gone
    body = aws_env.get_object(Bucket="score-results", Key=f"{run}/scores.parquet")["Body"].read()
    scores = pd.read_parquet(io.BytesIO(body))
    local = tmp_path / "local.parquet"
    score_catalogue(settings, str(catalogue), str(local), chunk_rows=CHUNK_ROWS)
    pd.testing.assert_frame_equal(scores, pd.read_parquet(local))


def test_s3_errors_name_the_object(registry, catalogue, tmp_path, aws_env):
    settings = registry.settings(tmp_path / "home")
    with pytest.raises(ObjectStoreNotFound, match="s3://score-landing/missing/X.csv does not exist"):
        score_catalogue(settings, "s3://score-landing/missing/X.csv", str(tmp_path / "o.csv"))
    with pytest.raises(DataValidationError, match="unknown format: name the file"):
        score_catalogue(settings, str(catalogue), "s3://score-results/folder/")
    assert not (tmp_path / "o.csv").exists()
