"""Helpers of the monitoring tests: a real MLflow server, prediction-log rows as the API writes them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd

CLI = [sys.executable, "-m", "rakuten_mlops.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


class Process:
    """A server started in its own process group on a free loopback port, stopped by its id."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None):
        self.cmd, self.log, self.env = cmd, log, {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, ready_url: str, timeout: float = 120) -> Process:
        handle = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_http(ready_url, timeout, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


def start_mlflow_server(root: Path) -> tuple[Process, str]:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    server = Process(cmd, root / "server.log", {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    return server.start(f"{uri}/health"), uri


def log_predictions(
    database_url: str, outputs: pd.DataFrame, model_version: str, created_at: datetime | None = None
):
    """Insert prediction-log rows exactly as the API writes them (one per row of ``outputs``)."""
    from sqlalchemy import insert

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction

    upgrade(database_url)
    when = created_at or datetime.now(UTC)
    rows = [
        {
            "prediction_id": str(uuid.uuid4()),
            "created_at": when,
            "model_version": str(model_version),
            "prdtypecode": int(r.prdtypecode),
            "confidence": float(r.confidence),
            "text_length": int(r.text_length),
            "word_count": int(r.word_count),
            "description_empty": bool(r.description_empty),
            "oov_rate": float(r.oov_rate),
            "productid": None,
        }
        for r in outputs.itertuples()
    ]
    with engine_for(database_url).begin() as conn:
        conn.execute(insert(Prediction.__table__), rows)
    return len(rows)


def clear_monitoring_tables(database_url: str) -> None:
    """Forget predictions, drift reports, live evaluations and retrain decisions (not products)."""
    from sqlalchemy import delete

    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import DriftReport, LiveEvaluation, ModelEvent, Prediction

    with engine_for(database_url).begin() as conn:
        for table in (Prediction, DriftReport, LiveEvaluation):
            conn.execute(delete(table))
        conn.execute(delete(ModelEvent).where(ModelEvent.event_type == "retrain_decision"))
