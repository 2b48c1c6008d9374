"""MLflow registry adapter: read the version behind an alias, move the alias, tag a version."""

from __future__ import annotations

import functools
import os

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

#: The MLflow client retries a failing request 7 times with exponential backoff by default
#: (minutes); the operator process fails fast instead and lets kopf retry the whole step.
FAIL_FAST_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"}


class RegistryUnavailable(RuntimeError):
    """MLflow could not be reached or answered with a server error: retry later."""


@functools.lru_cache(maxsize=16)
def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


class ModelRegistry:
    """The few registry calls the operator makes, with outages mapped to :class:`RegistryUnavailable`."""

    def __init__(self, tracking_uri: str | None) -> None:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise ValueError("no MLflow tracking URI: set spec.mlflowTrackingUri or MLFLOW_TRACKING_URI")
        self.tracking_uri = uri
        self.client = _client(uri)

    def alias_version(self, model: str, alias: str) -> str | None:
        """The version the alias points to, or None when the model or the alias does not exist."""
        try:
            return str(self.client.get_model_version_by_alias(model, alias).version)
        except MlflowException as exc:
            if exc.error_code in _NOT_FOUND:
                return None
            raise RegistryUnavailable(f"MLflow at {self.tracking_uri}: {exc}") from exc
        except Exception as exc:  # connection refused, timeouts, 5xx after retries
            raise RegistryUnavailable(f"MLflow at {self.tracking_uri} unreachable: {exc}") from exc

    def move_alias(self, model: str, alias: str, version: str) -> None:
        self._call(self.client.set_registered_model_alias, model, alias, version)

    def tag_version(self, model: str, version: str, key: str, value: str) -> None:
        self._call(self.client.set_model_version_tag, model, version, key, value)

    def _call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            raise RegistryUnavailable(f"MLflow at {self.tracking_uri}: {exc}") from exc
