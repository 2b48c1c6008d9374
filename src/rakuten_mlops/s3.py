"""The one adapter to S3 (MinIO, SeaweedFS, AWS): client, timeouts, retries and error mapping.

Credentials and endpoint come from the standard AWS environment, read by boto3 itself:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` (any S3-compatible server)
and optionally ``AWS_DEFAULT_REGION``. Failures become domain errors that name the endpoint and
the bucket, never a secret.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rakuten_mlops.errors import DataValidationError, ObjectStoreNotFound, ObjectStoreUnavailable
from rakuten_mlops.settings import redact_url

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 60
MAX_ATTEMPTS = 3
DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "403",
}


@dataclass(frozen=True)
class S3Url:
    """``s3://bucket/prefix``: ``prefix`` is empty or ends with ``/`` (a folder)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Url:
        if not url.startswith("s3://"):
            raise DataValidationError(url, "not an S3 URL; expected s3://BUCKET/PREFIX")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise DataValidationError(url, "no bucket; expected s3://BUCKET/PREFIX")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")

    def child(self, name: str) -> S3Url:
        return S3Url(self.bucket, f"{self.prefix}{name.strip('/')}/")

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def object_url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def object_url(url: str) -> tuple[S3Url, str]:
    """``s3://BUCKET/FOLDER/NAME`` as (the folder's URL, the object's key); a folder URL is refused."""
    folder = S3Url.parse(url)
    key = url[len("s3://") + len(folder.bucket) + 1 :]
    if not key or key.endswith("/"):
        raise DataValidationError(url, "not an object URL; expected s3://BUCKET/KEY with a file name")
    return S3Url(folder.bucket, key.rpartition("/")[0] + "/" if "/" in key else ""), key


@functools.cache
def client() -> Any:
    """An S3 client configured from the AWS environment, with bounded timeouts and retries."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        # path-style URLs: S3-compatible servers behind a Service name have no per-bucket DNS
        s3={"addressing_style": "path"},
    )
    return session.client("s3", region_name=session.region_name or "us-east-1", config=config)


def endpoint() -> str:
    return redact_url(client().meta.endpoint_url)


@contextmanager
def errors_named(url: S3Url | str) -> Iterator[None]:
    """Turn botocore failures into one-line domain errors naming the endpoint and ``url``."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        bucket = url.bucket if isinstance(url, S3Url) else str(url)
        if code in ("NoSuchBucket",):
            raise ObjectStoreNotFound(
                f"bucket {bucket!r} does not exist at {endpoint()} ({url}); create it or fix the URL"
            ) from None
        if code in ("NoSuchKey", "404"):
            raise ObjectStoreNotFound(f"{url} does not exist at {endpoint()}") from None
        if code in DENIED_CODES:
            raise ObjectStoreUnavailable(
                f"S3 at {endpoint()} refused access to {url} ({code}); "
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        raise ObjectStoreUnavailable(
            f"S3 at {endpoint()} failed on {url}: {code or 'error'} {error.get('Message', '')}".strip()
        ) from None
    except NoCredentialsError:
        raise ObjectStoreUnavailable(
            f"no S3 credentials for {url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from None
    except BotoCoreError as exc:  # connection refused, DNS, timeouts
        raise ObjectStoreUnavailable(
            f"cannot reach S3 at {endpoint()} for {url} ({exc.__class__.__name__}); "
            "check AWS_ENDPOINT_URL and that the server is running"
        ) from None


def list_keys(url: S3Url) -> list[str]:
    """Every object key under ``url`` (all pages)."""
    keys: list[str] = []
    with errors_named(url):
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=url.prefix)
        for page in pages:
            keys.extend(item["Key"] for item in page.get("Contents", ()))
    return keys


def get_bytes(url: S3Url, key: str) -> bytes:
    with errors_named(url.object_url(key)), _named_bucket(url):
        return client().get_object(Bucket=url.bucket, Key=key)["Body"].read()


def stream_object(url: S3Url, key: str, block_bytes: int) -> Iterator[bytes]:
    """An object's bytes in blocks of ``block_bytes`` (one block in memory at a time)."""
    with errors_named(url.object_url(key)):
        body = client().get_object(Bucket=url.bucket, Key=key)["Body"]
        yield from body.iter_chunks(block_bytes)


def put_file(url: S3Url, key: str, path: Path) -> None:
    """Upload a local file (multipart for large files: the object appears only once complete)."""
    with errors_named(url.object_url(key)), _named_bucket(url):
        client().upload_file(str(path), url.bucket, key)


def put_bytes(url: S3Url, key: str, body: bytes) -> None:
    with errors_named(url.object_url(key)), _named_bucket(url):
        client().put_object(Bucket=url.bucket, Key=key, Body=body)


def delete(url: S3Url, keys: list[str]) -> None:
    if not keys:
        return
    with errors_named(url):
        client().delete_objects(Bucket=url.bucket, Delete={"Objects": [{"Key": k} for k in keys]})


@contextmanager
def _named_bucket(url: S3Url) -> Iterator[None]:
    """boto3's transfer manager reports a missing bucket as a plain 404: name it as one."""
    from boto3.exceptions import S3UploadFailedError

    try:
        yield
    except S3UploadFailedError as exc:
        if "NoSuchBucket" in str(exc):
            raise ObjectStoreNotFound(
                f"bucket {url.bucket!r} does not exist at {endpoint()} ({url}); create it or fix the URL"
            ) from None
        raise ObjectStoreUnavailable(f"S3 at {endpoint()} refused an upload to {url}: {exc}") from None
