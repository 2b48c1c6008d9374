"""A real ``mlflow server`` (tracking + registry) on a free loopback port.

Two variants: a SQLite store with artifacts proxied to a local folder (the default), and a
Postgres store with artifacts proxied to S3, as the chart deploys it (the client then holds no
S3 credentials). ``stop()`` then ``start()`` keeps the port and the store.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import VENV_BIN, ManagedProcess, free_port
from tests.support.seaweedfs import S3Server


class MlflowServer:
    def __init__(
        self,
        root: Path,
        *,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
        s3: S3Server | None = None,
    ) -> None:
        self.root = root
        self.s3 = s3
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if s3 is not None:
            env.update(
                MLFLOW_S3_ENDPOINT_URL=s3.endpoint,
                AWS_ACCESS_KEY_ID=s3.access_key,
                AWS_SECRET_ACCESS_KEY=s3.secret_key,
                AWS_DEFAULT_REGION="us-east-1",
            )
        cmd = [
            VENV_BIN / "mlflow", "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", backend_store_uri or f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", artifacts_destination or str(root / "artifacts"), "--serve-artifacts",
        ]  # fmt: skip
        self.process = ManagedProcess(
            "mlflow server", cmd, root / "server.log", env=env, cwd=root, ready_url=f"{self.uri}/health"
        )

    def start(self, timeout: float = 120) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.process.start(timeout)
        return self

    def stop(self) -> None:
        self.process.stop(grace=15)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
