"""Retraining started from the API: a local background process, or an Argo workflow on Kubernetes.

Local jobs keep their state in files under ``$RAKUTEN_HOME/retrain/<id>/`` (log, exit code,
decision JSON), so any worker of the API can report on a job another worker started.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rakuten_mlops.serving.errors import RetrainAlreadyRunning, RetrainSubmissionError
from rakuten_mlops.settings import Settings

RUNNER = '"$@" > "$RETRAIN_DIR/log" 2>&1; echo $? > "$RETRAIN_DIR/exit_code"'


class LocalRetrainer:
    """Runs ``rakuten-mlops train --promote`` as a detached background process."""

    mode = "local"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.home / "retrain"
        self._lock = threading.Lock()

    def command(self, out: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rakuten_mlops.cli",
            "train",
            "--promote",
            "--output",
            str(out / "decision.json"),
        ]

    def child_env(self, job_dir: Path) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            {
                "RAKUTEN_HOME": str(s.home),
                "RAKUTEN_DATABASE_URL": s.database_url,
                "MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
                "RAKUTEN_REGISTERED_MODEL": s.registered_model,
                "RAKUTEN_PRODUCTION_ALIAS": s.production_alias,
                "RETRAIN_DIR": str(job_dir),
            }
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return env

    def start(self) -> dict[str, Any]:
        with self._lock:
            running = [j for j in self.jobs() if j["status"] == "running"]
            if running:
                raise RetrainAlreadyRunning(f"retraining job {running[0]['id']} is still running")
            job_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
            job_dir = self.root / job_id
            job_dir.mkdir(parents=True)
            proc = subprocess.Popen(
                ["/bin/sh", "-c", RUNNER, "retrain", *self.command(job_dir)],
                env=self.child_env(job_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            (job_dir / "pid").write_text(str(proc.pid))
            (job_dir / "started_at").write_text(datetime.now(UTC).isoformat())
            threading.Thread(target=proc.wait, name=f"retrain-{job_id}", daemon=True).start()  # reap
            return self.status(job_id)

    def jobs(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        return [self.status(p.name) for p in sorted(self.root.iterdir()) if (p / "pid").exists()]

    def status(self, job_id: str) -> dict[str, Any]:
        job_dir = self.root / job_id
        if "/" in job_id or ".." in job_id or not (job_dir / "pid").exists():
            raise KeyError(job_id)
        exit_file = job_dir / "exit_code"
        started = _read_time(job_dir / "started_at")
        info: dict[str, Any] = {"id": job_id, "mode": self.mode, "started_at": started, "exit_code": None}
        if exit_file.exists() and exit_file.read_text().strip():
            code = int(exit_file.read_text().strip())
            info.update(
                status="succeeded" if code == 0 else "failed",
                exit_code=code,
                finished_at=datetime.fromtimestamp(exit_file.stat().st_mtime, UTC),
            )
        elif _alive(int((job_dir / "pid").read_text())):
            info["status"] = "running"
        else:
            info["status"] = "failed"  # the process vanished without writing its exit code
        decision = job_dir / "decision.json"
        if decision.exists():
            with contextlib.suppress(ValueError):
                info["decision"] = json.loads(decision.read_text())
        log = job_dir / "log"
        if log.exists():
            info["log_tail"] = log.read_bytes()[-4000:].decode("utf-8", "replace")
        return info


class ArgoRetrainer:
    """Submits the ``rakuten-train`` WorkflowTemplate to the Argo server."""

    mode = "kubernetes"

    def __init__(self, settings: Settings, timeout: float = 15.0):
        if not settings.argo_server:
            raise RetrainSubmissionError("RAKUTEN_RETRAIN_MODE=kubernetes needs ARGO_SERVER")
        self.settings = settings
        self.timeout = timeout

    @property
    def base_url(self) -> str:
        server = self.settings.argo_server.rstrip("/")
        if "://" not in server:  # the argo CLI's form: host:port, HTTPS unless ARGO_SECURE=false
            scheme = "http" if os.environ.get("ARGO_SECURE", "true").lower() == "false" else "https"
            server = f"{scheme}://{server}"
        return server

    def _client(self):
        import httpx

        headers = {"Accept": "application/json"}
        if self.settings.argo_token is not None:
            token = self.settings.argo_token.get_secret_value().strip()
            headers["Authorization"] = token if token.lower().startswith("bearer ") else f"Bearer {token}"
        verify = os.environ.get("ARGO_INSECURE_SKIP_VERIFY", "false").lower() != "true"
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout, verify=verify)

    def start(self) -> dict[str, Any]:
        ns = self.settings.namespace
        template = self.settings.train_workflow_template
        body = {
            "namespace": ns,
            "resourceKind": "WorkflowTemplate",
            "resourceName": template,
            "submitOptions": {"generateName": f"{template}-api-", "labels": "rakuten.io/trigger=api"},
        }
        try:
            with self._client() as client:
                response = client.post(f"/api/v1/workflows/{ns}/submit", json=body)
        except Exception as exc:
            raise RetrainSubmissionError(f"cannot reach the Argo server at {self.base_url}: {exc}") from exc
        if response.status_code >= 300:
            raise RetrainSubmissionError(
                f"the Argo server refused the workflow ({response.status_code}): {response.text[:300]}"
            )
        return self._describe(response.json())

    def status(self, job_id: str) -> dict[str, Any]:
        try:
            with self._client() as client:
                response = client.get(f"/api/v1/workflows/{self.settings.namespace}/{job_id}")
        except Exception as exc:
            raise RetrainSubmissionError(f"cannot reach the Argo server at {self.base_url}: {exc}") from exc
        if response.status_code == 404:
            raise KeyError(job_id)
        if response.status_code >= 300:
            raise RetrainSubmissionError(
                f"the Argo server answered {response.status_code}: {response.text[:300]}"
            )
        return self._describe(response.json())

    def _describe(self, workflow: dict) -> dict[str, Any]:
        meta, status = workflow.get("metadata", {}), workflow.get("status", {}) or {}
        phase = (status.get("phase") or "Pending").lower()
        mapped = {"pending": "running", "running": "running", "succeeded": "succeeded"}.get(phase, "failed")
        return {
            "id": meta.get("name", ""),
            "mode": self.mode,
            "status": mapped,
            "started_at": status.get("startedAt") or meta.get("creationTimestamp"),
            "finished_at": status.get("finishedAt"),
            "exit_code": None,
        }


def make_retrainer(settings: Settings) -> LocalRetrainer | ArgoRetrainer:
    return ArgoRetrainer(settings) if settings.retrain_mode == "kubernetes" else LocalRetrainer(settings)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _read_time(path: Path) -> datetime | None:
    try:
        return datetime.fromisoformat(path.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_for(retrainer: LocalRetrainer, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll a local job until it finishes (tests and the demo)."""
    deadline = time.monotonic() + timeout
    while True:
        info = retrainer.status(job_id)
        if info["status"] != "running" or time.monotonic() > deadline:
            return info
        time.sleep(0.5)
