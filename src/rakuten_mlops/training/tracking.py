"""Run tracking: the training and drift experiments and the code's identity (git sha, version).

The MLflow client, its HTTP policy and its error mapping live in :mod:`rakuten_mlops.registry`.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from rakuten_mlops.settings import Settings


def ensure_experiment(settings: Settings, name: str) -> str:
    """The experiment's id; created on first use (embedded: artifacts under RAKUTEN_HOME)."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = settings.artifacts_dir.as_uri() if settings.embedded_mlflow else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another training
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


@functools.cache
def git_sha() -> str:
    """The commit the code runs from: ``RAKUTEN_GIT_SHA`` (set in images), else git, else 'unknown'."""
    if os.environ.get("RAKUTEN_GIT_SHA"):
        return os.environ["RAKUTEN_GIT_SHA"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_version() -> str:
    from rakuten_mlops import __version__

    return __version__
