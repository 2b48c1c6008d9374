"""The model server: loads the production model from the MLflow registry and swaps it atomically.

One immutable :class:`LoadedModel` is held by reference. A request (or a micro-batch of
requests) takes that reference once and predicts with it, so a swap never mixes versions
inside a response and never fails a request in flight.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from rakuten_mlops.errors import ModelNotFoundError, RegistryUnavailableError
from rakuten_mlops.serving.errors import ModelNotReadyError
from rakuten_mlops.serving.inference import plan_for
from rakuten_mlops.settings import Settings

log = logging.getLogger("rakuten_mlops.serving")

SCORE_TAGS = ("f1_weighted", "f1_macro", "accuracy")
STARTUP_BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


@dataclass(frozen=True)
class RegistryVersion:
    """What the registry says about the version to serve."""

    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One loaded model version; never mutated, only replaced."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    scores: dict[str, float]
    tags: dict[str, str]
    loaded_at: datetime
    pipeline: Any
    classes: np.ndarray = field(repr=False)

    runner: Any = field(repr=False, default=None)

    def predict(self, designations: list[str], descriptions: list[str], k: int):
        """Top-k codes and probabilities (best first) and the prediction-log features of each product."""
        proba, features = self.runner.run(designations, descriptions)
        k = max(1, min(k, proba.shape[1]))
        top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        top_p = np.take_along_axis(proba, top, axis=1)
        return self.classes[top].tolist(), top_p.tolist(), features


def load_pipeline(uri: str) -> Any:
    """The sklearn pipeline behind a ``models:/`` URI (the training package's loader when present)."""
    try:
        from rakuten_mlops.model.loading import load_pipeline as load
    except ImportError:
        import mlflow.sklearn

        return mlflow.sklearn.load_model(uri)
    return load(uri)


class ModelStore:
    """Holds the served model; ``ready`` is true once a model is loaded.

    ``load()`` asks the registry which version to serve (the pinned ``RAKUTEN_MODEL_VERSION``
    or the ``production`` alias) and swaps it in when it differs from the current one.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        loader: Callable[[str], Any] = load_pipeline,
        on_swap: Callable[[LoadedModel | None, LoadedModel], None] | None = None,
        on_reload: Callable[[bool], None] | None = None,
    ):
        self.settings = settings
        self.name = settings.registered_model
        self.alias = settings.production_alias
        self.pinned_version = settings.model_version
        self._loader = loader
        self._on_swap = on_swap
        self._on_reload = on_reload
        self._current: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self.registry_reachable: bool | None = None
        self.last_check: datetime | None = None
        self.last_error: str | None = None
        self._client = None

    # --- state -----------------------------------------------------------------------
    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def require(self) -> LoadedModel:
        model = self._current
        if model is None:
            raise ModelNotReadyError(self.last_error or "the model is still loading")
        return model

    # --- registry --------------------------------------------------------------------
    def client(self):
        if self._client is None:
            import mlflow
            from mlflow import MlflowClient

            # models:/ downloads (mlflow.sklearn.load_model) use the process-wide URIs, not this client's.
            mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
            mlflow.set_registry_uri(self.settings.mlflow_tracking_uri)
            self._client = MlflowClient(
                tracking_uri=self.settings.mlflow_tracking_uri, registry_uri=self.settings.mlflow_tracking_uri
            )
        return self._client

    def resolve(self, version: str | None = None) -> RegistryVersion:
        """The registry's answer for ``version``, the pinned version, or the alias."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        target = version or self.pinned_version
        try:
            if target:
                mv = client.get_model_version(self.name, str(target))
            else:
                mv = client.get_model_version_by_alias(self.name, self.alias)
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                self._mark_reachable(True)
                what = f"version {target}" if target else f"alias @{self.alias}"
                raise ModelNotFoundError(f"registered model {self.name!r} has no {what}") from exc
            self._mark_reachable(False, str(exc))
            raise RegistryUnavailableError(f"MLflow registry unreachable: {_short(exc)}") from exc
        except Exception as exc:  # connection refused, timeouts, DNS
            self._mark_reachable(False, str(exc))
            raise RegistryUnavailableError(f"MLflow registry unreachable: {_short(exc)}") from exc
        self._mark_reachable(True)
        return RegistryVersion(str(mv.version), mv.run_id, mv.source, dict(mv.tags or {}))

    def check_registry(self) -> bool:
        """Probe the registry cheaply (used by /model when the poll is off)."""
        try:
            self.client().get_registered_model(self.name)
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if (
                isinstance(exc, MlflowException)
                and getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"
            ):
                self._mark_reachable(True)
                return True
            self._mark_reachable(False, str(exc))
            return False
        self._mark_reachable(True)
        return True

    def _mark_reachable(self, reachable: bool, error: str | None = None) -> None:
        self.registry_reachable = reachable
        self.last_check = datetime.now(UTC)
        if not reachable:
            self.last_error = _short(error or "registry unreachable")

    # --- loading ---------------------------------------------------------------------
    def load(self, version: str | None = None, *, force: bool = False) -> bool:
        """Load the version the registry names (or ``version``); True when the served model changed."""
        with self._load_lock:
            try:
                target = self.resolve(version)
                current = self._current
                if current is not None and current.version == target.version and not force:
                    return False
                model = self._load_version(target)
            except Exception as exc:
                self.last_error = _short(str(exc))
                if self._on_reload:
                    self._on_reload(False)
                raise
            previous, self._current = self._current, model
            self.last_error = None
            if self._on_reload:
                self._on_reload(True)
            if self._on_swap:
                self._on_swap(previous, model)
            log.info(
                "serving %s version %s (was %s)",
                self.name,
                model.version,
                previous.version if previous else None,
            )
            return True

    def _load_version(self, target: RegistryVersion) -> LoadedModel:
        uri = f"models:/{self.name}/{target.version}"
        started = time.perf_counter()
        try:
            pipeline = self._loader(uri)
        except Exception as exc:
            from mlflow.exceptions import MlflowException

            if isinstance(exc, MlflowException | OSError | ConnectionError):
                self._mark_reachable(False, str(exc))
                raise RegistryUnavailableError(f"cannot download {uri}: {_short(exc)}") from exc
            raise
        classes = np.asarray(getattr(pipeline, "classes_", []))
        if classes.size == 0 or not hasattr(pipeline, "predict_proba"):
            raise ModelNotFoundError(f"{uri} is not a classifier with classes_ and predict_proba")
        aliases = self._aliases_of(target.version)
        scores = {k: float(v) for k, v in target.tags.items() if k in SCORE_TAGS and _is_float(v)}
        runner = plan_for(pipeline)
        log.info("loaded %s in %.2fs (%s run)", uri, time.perf_counter() - started, runner.kind)
        return LoadedModel(
            name=self.name,
            version=target.version,
            alias=self.alias if self.alias in aliases else None,
            run_id=target.run_id,
            scores=scores,
            tags=target.tags,
            loaded_at=datetime.now(UTC),
            pipeline=pipeline,
            classes=classes.astype(np.int64),
            runner=runner,
        )

    def _aliases_of(self, version: str) -> list[str]:
        try:
            return list(self.client().get_model_version(self.name, version).aliases or [])
        except Exception:
            return []

    # --- background ------------------------------------------------------------------
    async def run_background(self) -> None:
        """Load at startup with backoff (not ready meanwhile), then poll the alias if enabled."""
        attempt = 0
        while self._current is None:
            try:
                await asyncio.to_thread(self.load)
            except Exception as exc:
                delay = STARTUP_BACKOFF_SECONDS[min(attempt, len(STARTUP_BACKOFF_SECONDS) - 1)]
                log.warning("model not loaded (%s); retrying in %.0fs", _short(exc), delay)
                attempt += 1
                await asyncio.sleep(delay)
        interval = self.settings.model_poll_seconds
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.load)
            except Exception as exc:  # keep serving the loaded model
                log.warning(
                    "alias poll failed, still serving version %s: %s", self._current.version, _short(exc)
                )


def _is_float(value: str) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _short(exc: object, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:limit]
