"""Retraining as a local background process: ``rakuten-mlops train --promote`` detached.

Jobs keep their state in files under ``$RAKUTEN_HOME/retrain/<id>/`` (log, exit code, decision
JSON), so any worker of the API, or the control room, can report on a job another one started.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rakuten_mlops.errors import RetrainAlreadyRunning
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
