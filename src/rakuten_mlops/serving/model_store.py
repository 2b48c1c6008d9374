"""The model server: loads the production model from the MLflow registry and swaps it atomically.

One immutable :class:`LoadedModel` is held by reference. A request (or a micro-batch of
requests) takes that reference once and predicts with it, so a swap never mixes versions
inside a response and never fails a request in flight.

With several workers (``serve --workers N``) an admin reload reaches the other workers through a
:class:`ReloadSignal`: a small file in the directory the workers of one server share.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rakuten_mlops.errors import ModelNotFoundError, RegistryUnavailableError
from rakuten_mlops.model.loading import load_pipeline
from rakuten_mlops.model.runner import plan_for, top_k
from rakuten_mlops.serving.errors import ModelNotReadyError
from rakuten_mlops.settings import Settings

log = logging.getLogger("rakuten_mlops.serving")

SCORE_TAGS = ("f1_weighted", "f1_macro", "accuracy")
STARTUP_BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
RELOAD_SIGNAL_FILE = "rakuten-reload-generation.json"
RELOAD_CHECK_SECONDS = 1.0  # how often every worker looks at the reload signal
RELOAD_ATTEMPTS = 3  # loads a worker tries for one signalled reload before waiting for the next


@dataclass(frozen=True)
class RegistryVersion:
    """What the registry says about the version to serve."""

    version: str
    run_id: str | None
    source: str
    tags: dict[str, str]
    aliases: tuple[str, ...] = ()


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
        top, top_p = top_k(proba, k)
        return self.classes[top].tolist(), top_p.tolist(), features


@dataclass(frozen=True)
class ReloadRequest:
    """One admin reload announced to the other workers: a unique generation and its ``force``."""

    generation: str
    force: bool = False


class ReloadSignal:
    """A reload generation file shared by the workers of one server (no broker needed).

    The worker that answers ``POST /admin/reload`` (or ``/admin/rollback``) writes a new generation
    (temporary file + ``os.replace``, so readers see the old or the new file, never half of one);
    every worker's background task reads it about once a second and reloads when it moved. A
    missing or unreadable file means "no request".
    """

    def __init__(self, directory: str | os.PathLike[str]):
        self.path = Path(directory) / RELOAD_SIGNAL_FILE

    @classmethod
    def from_env(cls) -> ReloadSignal | None:
        """The signal in the workers' shared directory (``PROMETHEUS_MULTIPROC_DIR``), if any."""
        from rakuten_mlops.serving.metrics import multiprocess_dir

        directory = multiprocess_dir()
        return cls(directory) if directory else None

    def read(self) -> ReloadRequest | None:
        """The latest announced reload (one read of a ~150-byte file); None when missing or corrupt."""
        try:
            data = json.loads(self.path.read_bytes())
            return ReloadRequest(str(data["generation"]), bool(data.get("force", False)))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def announce(self, force: bool = False) -> ReloadRequest:
        """Write a new generation; raises ``OSError`` when the directory is not writable."""
        request = ReloadRequest(uuid.uuid4().hex, force)
        self.write(request)
        return request

    def write(self, request: ReloadRequest) -> None:
        """Replace the file atomically with ``request``."""
        body = {
            "generation": request.generation,
            "force": request.force,
            "pid": os.getpid(),
            "at": datetime.now(UTC).isoformat(),
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{request.generation[:8]}.tmp")
        try:
            temporary.write_text(json.dumps(body))
            os.replace(temporary, self.path)
        finally:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


class ModelStore:
    """Holds the served model; ``ready`` is true once a model is loaded, or while the registry
    answers that no production version exists yet (a fresh install).

    ``load()`` asks the registry which version to serve (the pinned ``RAKUTEN_MODEL_VERSION``
    or the ``production`` alias) and swaps it in when it differs from the current one;
    ``reload_all_workers()`` does the same and tells the other workers of the server to follow.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        loader: Callable[[str], Any] = load_pipeline,
        on_swap: Callable[[LoadedModel | None, LoadedModel], None] | None = None,
        on_reload: Callable[[bool], None] | None = None,
        reload_signal: ReloadSignal | None | Literal["env"] = "env",
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
        # the registry answered that the alias names no version yet (a fresh install): ready, no model
        self.no_production_version = False
        self._registry = None
        # "env": the directory shared by the workers of ``serve --workers N``; None: a single process
        self.reload_signal = ReloadSignal.from_env() if reload_signal == "env" else reload_signal
        self._signal_seen: ReloadRequest | None = None

    # --- state -----------------------------------------------------------------------
    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def ready(self) -> bool:
        """A model is loaded, or the registry said that no production version exists yet."""
        return self._current is not None or self.no_production_version

    def require(self) -> LoadedModel:
        model = self._current
        if model is None:
            if self.no_production_version:
                raise ModelNotReadyError(self.no_production_reason())
            raise ModelNotReadyError(self.last_error or "the model is still loading")
        return model

    def no_production_reason(self) -> str:
        return (
            f"no production model exists yet: registered model {self.name!r} has no @{self.alias} version; "
            "train and promote one (rakuten-mlops train --promote, or rakuten-mlops promote VERSION) "
            "and this API serves it as soon as the registry names it"
        )

    # --- registry --------------------------------------------------------------------
    def registry(self):
        """The registry adapter, built once (it also sets the process-wide MLflow URI that
        ``models:/`` downloads use)."""
        if self._registry is None:
            from rakuten_mlops.registry import ModelRegistry

            self._registry = ModelRegistry(self.settings)
        return self._registry

    def resolve(self, version: str | None = None) -> RegistryVersion:
        """The registry's answer for ``version``, the pinned version, or the alias."""
        target = version or self.pinned_version
        try:
            registry = self.registry()
            mv = registry.version(target) if target else registry.by_alias(self.alias)
        except ModelNotFoundError:
            self._mark_reachable(True)
            raise
        except Exception as exc:
            self._mark_reachable(False, str(exc))
            raise
        self._mark_reachable(True)
        return RegistryVersion(mv.version, mv.run_id, mv.source, mv.tags, mv.aliases)

    def check_registry(self) -> bool:
        """Probe the registry cheaply (used by /model when the poll is off)."""
        try:
            self.registry().check()
        except Exception as exc:
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
                target = self._resolve_noting_absence(version)
                current = self._current
                if current is not None and current.version == target.version and not force:
                    return False
                model = self._load_version(target)
            except Exception as exc:
                self.last_error = _short(str(exc))
                if self._on_reload:
                    self._on_reload(False)
                raise
            if self._current is None:
                freeze_heap()
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

    def _resolve_noting_absence(self, version: str | None) -> RegistryVersion:
        """``resolve()``, noting whether the registry answered that the alias names no version yet."""
        try:
            target = self.resolve(version)
        except ModelNotFoundError:
            self.no_production_version = not (version or self.pinned_version)
            raise
        except Exception:
            self.no_production_version = False
            raise
        self.no_production_version = False
        return target

    def alias_version(self) -> str | None:
        """The version behind the alias now (one registry call); None when the alias is not set."""
        return self.registry().aliases().get(self.alias)

    def load_beside(self, version: str) -> LoadedModel:
        """Load ``version`` without serving it (the shadow's candidate); the served model is untouched."""
        return self._load_version(self.resolve(version))

    def reload_all_workers(self, *, force: bool = False) -> bool:
        """``load()`` in this worker, then announce it so every other worker reloads within ~1 s."""
        changed = self.load(force=force)
        self.announce_reload(force=force)
        return changed

    def announce_reload(self, *, force: bool = False) -> None:
        """Tell the other workers of this server to reload (nothing to do in a single process)."""
        signal = self.reload_signal
        if signal is None:
            return
        request = ReloadRequest(uuid.uuid4().hex, force)
        self._signal_seen = request  # before the write: this worker's own task must not reload again
        try:
            signal.write(request)
        except OSError as exc:
            log.warning("cannot tell the other workers to reload (%s): they follow their poll", _short(exc))

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
        # the aliases come with the registry's answer: a second call that failed (a busy registry,
        # no retries) labelled some workers' rakuten_model_info alias="" and others "production"
        aliases = target.aliases
        scores = {k: float(v) for k, v in target.tags.items() if k in SCORE_TAGS and _is_float(v)}
        runner = plan_for(pipeline)
        warm_up(runner)
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

    # --- background ------------------------------------------------------------------
    async def run_background(self) -> None:
        """Load at startup with backoff (not ready meanwhile), then follow the alias poll (if enabled)
        and, with several workers, the reloads other workers announce (checked every second)."""
        signal = self.reload_signal
        if signal is not None:
            self._signal_seen = signal.read()  # before the first load: a reload announced during it counts
        attempt = 0
        while self._current is None:
            try:
                await asyncio.to_thread(self.load)
            except Exception as exc:
                delay = STARTUP_BACKOFF_SECONDS[min(attempt, len(STARTUP_BACKOFF_SECONDS) - 1)]
                if self.no_production_version and self.settings.model_poll_seconds > 0:
                    # nothing to load until a promotion: look again at the poll's pace
                    delay = min(delay, self.settings.model_poll_seconds)
                log.warning("model not loaded (%s); retrying in %.0fs", _short(exc), delay)
                attempt += 1
                await asyncio.sleep(delay)
        interval = self.settings.model_poll_seconds
        if interval <= 0 and signal is None:
            return
        tick = interval if interval > 0 else RELOAD_CHECK_SECONDS
        if signal is not None:
            tick = min(tick, RELOAD_CHECK_SECONDS)
        next_poll = time.monotonic() + interval if interval > 0 else float("inf")
        pending: ReloadRequest | None = None
        failures = 0
        while True:
            await asyncio.sleep(tick)
            request = signal.read() if signal is not None else None
            if request is not None and request != self._signal_seen:
                self._signal_seen = pending = request
                failures = 0
                log.info("another worker reloaded (generation %s): reloading here", request.generation[:8])
            polling = time.monotonic() >= next_poll
            if pending is None and not polling:
                continue
            if polling:
                next_poll = time.monotonic() + interval
            try:
                await asyncio.to_thread(self.load, force=pending is not None and pending.force)
            except Exception as exc:  # keep serving the loaded model
                failures += 1
                what = "reload asked by another worker" if pending else "alias poll"
                log.warning(
                    "%s failed, still serving version %s: %s", what, self._current.version, _short(exc)
                )
                if pending is not None and failures >= RELOAD_ATTEMPTS:
                    pending = None
            else:
                pending = None


def warm_up(runner: Any) -> None:
    """One prediction on a placeholder product before the model serves (and before ``/ready``):
    the first call of a freshly loaded pipeline pays for what later calls reuse (its first
    vectorisation, numpy's first dispatches), which would otherwise land on the first user
    request. A model that fails on it is left for the requests to report."""
    try:
        runner.run(["warm-up"], [""])
    except Exception as exc:
        log.warning("warm-up prediction failed, serving without it: %s", _short(exc))


def freeze_heap() -> None:
    """Take every object alive after the first model load out of the garbage collector's scans.

    The imports (MLflow, scikit-learn, pandas, FastAPI) leave about a million tracked objects.
    Under load a full collection runs every few seconds and would scan them all, a pause that
    becomes the requests' tail latency. ``gc.freeze()`` moves them to the permanent
    generation (what Instagram and gunicorn's preload do); reference counting still frees
    them, and later objects are collected as usual.
    """
    gc.collect()
    gc.freeze()


def _is_float(value: str) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _short(exc: object, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:limit]
