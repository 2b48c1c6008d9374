"""Typed settings for every job of the platform, loaded once from the environment.

Embedded default: everything lives under ``RAKUTEN_HOME`` (SQLite data DB, SQLite MLflow
store, local artifacts). Production: point ``RAKUTEN_DATABASE_URL`` at Postgres and
``MLFLOW_TRACKING_URI`` at an MLflow server (artifacts proxied to S3/MinIO).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "password", "admin", "secret", "token"}


class Settings(BaseSettings):
    """All knobs, env prefix ``RAKUTEN_`` (MLflow and AWS variables keep their usual names)."""

    model_config = SettingsConfigDict(env_prefix="RAKUTEN_", extra="ignore", validate_default=True)

    home: Path = Field(default=Path(".rakuten"), description="Root of the embedded default's files.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite under home.")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "RAKUTEN_MLFLOW_TRACKING_URI"),
        description="MLflow tracking/registry URI; default SQLite under home.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_S3_ENDPOINT_URL", "RAKUTEN_S3_ENDPOINT_URL"),
        description="S3-compatible endpoint for client-side artifact access (MinIO, SeaweedFS).",
    )
    artifacts_bucket: str = "mlflow"

    # Registry and experiments
    registered_model: str = "rakuten_classifier"
    production_alias: str = "production"
    training_experiment: str = "rakuten_model_training"
    drift_experiment: str = "rakuten_drift"
    estimate_experiment: str = "rakuten_estimate"

    # Promotion gate
    min_f1: float = Field(default=0.75, ge=0.0, le=1.0)
    min_gain: float = Field(default=0.0, ge=-1.0, le=1.0)
    min_rows_per_class: int = Field(default=5, ge=1)
    max_ece: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Largest expected calibration error (above the sampling floor) the gate accepts.",
    )

    # Serving
    model_version: str | None = Field(
        default=None, description="Pin a registry version (the operator sets it)."
    )
    model_poll_seconds: float = Field(default=30.0, ge=0.0)
    admin_token: SecretStr | None = None
    feedback_token: SecretStr | None = Field(
        default=None, description="Bearer token of POST /feedback (the admin token is accepted too)."
    )
    max_batch_items: int = Field(default=1000, ge=1)
    max_text_chars: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    serve_fast_path: bool = Field(
        default=True,
        description="Answer /predict and /predict/batch in plain ASGI before FastAPI (false: FastAPI routes).",
    )
    max_inflight: int = Field(
        default=64,
        ge=0,
        description="POST /predict requests a worker holds at once; one more is refused 503 (0: no limit).",
    )
    max_inflight_batches: int = Field(
        default=2,
        ge=0,
        description="POST /predict/batch requests a worker holds at once; one more is refused 503 (0: no limit).",
    )
    prediction_log_queue_size: int = Field(default=50_000, ge=1)
    prediction_log_flush_rows: int = Field(default=500, ge=1)
    prediction_log_flush_seconds: float = Field(default=1.0, gt=0.0)
    prediction_log_sample: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Share of predictions written to the prediction log."
    )
    prediction_retention_days: int = Field(
        default=30, ge=1, description="Whole days of prediction log `rakuten-mlops retention` keeps."
    )
    shadow_sample_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of requests a pinned pod also scores with the alias's newer version, while the"
            " operator judges that version in shadow beside the one the pod serves."
        ),
    )
    shadow_queue_size: int = Field(default=256, ge=1)
    shadow_poll_seconds: float = Field(default=5.0, gt=0.0)
    retrain_mode: Literal["local", "kubernetes"] = "local"
    api_url: str = "http://127.0.0.1:8000"

    # Monitoring and retraining decisions
    retrain_f1: float = Field(default=0.70, ge=0.0, le=1.0)
    retrain_backlog: int = Field(default=10_000, ge=0)
    drift_window: str = "7d"
    drift_min_current_rows: int = Field(default=200, ge=1)
    drift_reference_rows: int = Field(default=20_000, ge=100, description="Cap of sampled reference rows.")
    drift_p_value: float = Field(
        default=0.001, gt=0.0, lt=1.0, description="p-value below which a test drifts."
    )
    drift_psi_threshold: float = Field(
        default=0.25, gt=0.0, description="PSI at or above which text length drifts."
    )
    drift_medium_features: int = Field(
        default=2, ge=1, description="Drifted features that make severity medium."
    )
    drift_high_features: int = Field(default=3, ge=1, description="Drifted features that make severity high.")

    # Kubernetes / Argo (used by /admin/retrain in kubernetes mode and the control room)
    namespace: str = "rakuten"
    train_workflow_template: str = "rakuten-train"
    argo_server: str | None = Field(
        default=None, validation_alias=AliasChoices("ARGO_SERVER", "RAKUTEN_ARGO_SERVER")
    )
    argo_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ARGO_TOKEN", "RAKUTEN_ARGO_TOKEN")
    )
    argo_secure: bool = Field(
        default=True,
        validation_alias=AliasChoices("ARGO_SECURE", "RAKUTEN_ARGO_SECURE"),
        description="HTTPS for an ARGO_SERVER given as host:port (the argo CLI's ARGO_SECURE).",
    )
    argo_insecure_skip_verify: bool = Field(
        default=False,
        validation_alias=AliasChoices("ARGO_INSECURE_SKIP_VERIFY", "RAKUTEN_ARGO_INSECURE_SKIP_VERIFY"),
        description="Accept the Argo server's self-signed certificate.",
    )
    prometheus_url: str | None = None

    @field_validator("admin_token", "feedback_token")
    @classmethod
    def _reject_placeholder_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            name = f"RAKUTEN_{info.field_name.upper()}"
            raise ValueError(f"{name} is a placeholder value; set a real random token")
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        home = self.home.expanduser().resolve()
        self.home = home
        if not self.database_url:
            self.database_url = f"sqlite:///{home / 'data.db'}"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
        return self

    # Derived paths of the embedded default
    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def embedded_mlflow(self) -> bool:
        return (
            self.mlflow_tracking_uri.startswith(("sqlite:", "file:")) or "://" not in self.mlflow_tracking_uri
        )

    def backends_line(self) -> str:
        """One line naming the backends this process uses (passwords hidden)."""
        return (
            f"backends: data={redact_url(self.database_url)} mlflow={redact_url(self.mlflow_tracking_uri)}"
            + (f" s3={self.s3_endpoint_url}" if self.s3_endpoint_url else "")
        )

    def ensure_home(self) -> None:
        for path in (self.home, self.artifacts_dir, self.reports_dir):
            path.mkdir(parents=True, exist_ok=True)


def redact_url(url: str) -> str:
    """Hide the password of a URL such as postgresql://user:pw@host/db."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not an SQLAlchemy URL (http://...): show as is unless it carries credentials
        return url.split("@")[-1] if "@" in url else url
    return parsed.render_as_string(hide_password=True)


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
