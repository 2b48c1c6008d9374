"""MLflow connection: configuration from Settings, a fast reachability check, error mapping."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rakuten_mlops.errors import RegistryUnavailableError
from rakuten_mlops.settings import Settings, redact_url


def configure_mlflow(settings: Settings):
    """Point the MLflow client at the settings' tracking/registry URI and return a client.

    Fails fast with :class:`RegistryUnavailableError` when a tracking server does not answer,
    instead of MLflow's minutes of retries.
    """
    import mlflow
    from mlflow import MlflowClient

    # A dead server should fail in seconds, not after MLflow's default 7 retries x 120 s.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    if settings.s3_endpoint_url:
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint_url)
    if settings.embedded_mlflow:
        settings.ensure_home()
    else:
        check_reachable(settings.mlflow_tracking_uri)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`RegistryUnavailableError` unless the MLflow server at ``uri`` answers /health."""
    import httpx

    base = uri.rstrip("/")
    try:
        response = httpx.get(f"{base}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise RegistryUnavailableError(unreachable_message(uri, f"{exc.__class__.__name__}: {exc}")) from exc
    if response.status_code >= 500:
        raise RegistryUnavailableError(unreachable_message(uri, f"HTTP {response.status_code} on /health"))


def unreachable_message(uri: str, cause: str) -> str:
    return (
        f"MLflow at {redact_url(uri)} is unreachable ({cause}); nothing was registered or promoted. "
        "Start the tracking server or fix MLFLOW_TRACKING_URI."
    )


def _is_connection_failure(exc: BaseException) -> bool:
    """True for failures to reach the MLflow server (not for data-database errors)."""
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
        if type(seen).__name__ == "MlflowException" and "Max retries exceeded" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def registry_errors(settings: Settings) -> Iterator[None]:
    """Turn MLflow's connection failures (raised mid-operation) into RegistryUnavailableError."""
    try:
        yield
    except RegistryUnavailableError:
        raise
    except Exception as exc:
        if _is_connection_failure(exc):
            raise RegistryUnavailableError(
                unreachable_message(settings.mlflow_tracking_uri, str(exc)[:300])
            ) from exc
        raise


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
