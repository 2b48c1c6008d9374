"""The one adapter to the MLflow model registry: client, failures, reads and alias moves.

Everything that talks to the registry goes through here: the CLI's promote and rollback, the
API (model store and admin routes), the control room, monitoring, the data status and the
operator. This module owns

- the client, with one HTTP policy for the whole process (few retries, bounded timeout: a dead
  server fails in seconds and the caller's own loop retries later);
- the mapping of MLflow's failures to the domain errors: "not found" is
  :class:`ModelNotFoundError` (or ``None`` where absence is a normal answer), "cannot reach or
  use the server" is :class:`RegistryUnavailableError`;
- moves of an alias, which are compare-and-set under the registry lock (a database row lock)
  with their ``model_events`` row written in the same transaction, so the recorded history
  always matches the alias.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rakuten_mlops.errors import ModelNotFoundError, PlatformError, RegistryUnavailableError
from rakuten_mlops.settings import Settings, redact_url

log = logging.getLogger(__name__)

#: MLflow's HTTP policy, set as the defaults of MLflow's own settings (a deployment that sets
#: the ``MLFLOW_HTTP_REQUEST_*`` variables still overrides them).
HTTP_MAX_RETRIES = 2
HTTP_BACKOFF_FACTOR = 1
HTTP_TIMEOUT_SECONDS = 30
PROBE_TIMEOUT_SECONDS = 5.0

NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"})
#: Model-version tag the operator sets on a candidate it puts in shadow: the stable version it is
#: judged beside. A pinned pod serving that version shadows the alias's version only while the
#: tag names it (serving/shadow.py), so a readiness-only rollout, with no analysis, costs no shadow.
SHADOW_TAG = "rollout_shadow_beside"
SERVER_FAILURE_CODES = frozenset(
    {
        "INTERNAL_ERROR",
        "TEMPORARILY_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
        "ENDPOINT_NOT_FOUND",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    }
)


class AliasChanged(PlatformError):
    """The alias no longer points where the caller expected: nothing was moved or recorded."""

    exit_code = 3

    def __init__(self, alias: str, expected: str | None, current: str | None):
        self.expected, self.current = expected, current
        super().__init__(f"alias @{alias} points to version {current}, not {expected}: nothing was changed")


# --- client and failures ------------------------------------------------------------------


def apply_http_policy(s3_endpoint_url: str | None = None) -> None:
    """Make :data:`HTTP_MAX_RETRIES` and friends MLflow's defaults in this process (idempotent)."""
    from mlflow import environment_variables as mlflow_env

    mlflow_env.MLFLOW_HTTP_REQUEST_MAX_RETRIES.default = HTTP_MAX_RETRIES
    mlflow_env.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.default = HTTP_BACKOFF_FACTOR
    mlflow_env.MLFLOW_HTTP_REQUEST_TIMEOUT.default = HTTP_TIMEOUT_SECONDS
    if s3_endpoint_url:
        mlflow_env.MLFLOW_S3_ENDPOINT_URL.default = s3_endpoint_url


def connect(settings: Settings):
    """An ``MlflowClient`` for the settings' registry, also set as the process-wide MLflow URI
    (``models:/`` downloads and run logging use it), in this process only (:func:`_use_uri`).

    A tracking server that does not answer ``/health`` fails here, in seconds, with
    :class:`RegistryUnavailableError`; the embedded store gets its home directory.
    """

    from rakuten_mlops.db.engine import serialize_mlflow_migrations

    apply_http_policy(settings.s3_endpoint_url)
    serialize_mlflow_migrations()  # before MLflow opens a SQL store of this process
    uri = settings.mlflow_tracking_uri
    if settings.embedded_mlflow:
        settings.ensure_home()
    else:
        check_reachable(uri)
    _use_uri(uri)
    return _client(uri)


#: The run tag a job's :func:`heartbeat` rewrites with the time (ISO 8601, UTC) while it runs.
HEARTBEAT_TAG = "rakuten.heartbeat"
HEARTBEAT_SECONDS = 60.0


@contextmanager
def heartbeat(settings: Settings, run_id: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Write the time to ``run_id``'s :data:`HEARTBEAT_TAG` now and every ``every`` seconds
    while the block runs.

    A run of a live job is never older than ``every`` by its tag, however long the job takes;
    a run left ``RUNNING`` by a job that died keeps the time of its last beat, which is what
    ``doctor --clean`` judges it by. A beat that fails is logged and the job goes on (the next
    beat may pass): the job's own MLflow calls report an unreachable server.
    """
    client = _client(settings.mlflow_tracking_uri)

    def beat() -> None:
        client.set_tag(run_id, HEARTBEAT_TAG, datetime.now(UTC).isoformat(timespec="seconds"))

    beat()
    stop = threading.Event()

    def beating() -> None:
        while not stop.wait(every):
            try:
                beat()
            except Exception as exc:  # the job goes on; a missed beat only ages the run
                log.warning("heartbeat of MLflow run %s not written: %s", run_id, exc)

    thread = threading.Thread(target=beating, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=HTTP_TIMEOUT_SECONDS)


def last_heartbeat(run) -> datetime | None:
    """The time of ``run``'s last :func:`heartbeat`, if its job wrote one."""
    value = run.data.tags.get(HEARTBEAT_TAG)
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


#: What ``mlflow.set_tracking_uri`` and ``mlflow.set_registry_uri`` write to the environment.
_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _use_uri(uri: str) -> None:
    """Make ``uri`` MLflow's tracking and registry URI in this process, leaving ``os.environ``
    as it was.

    MLflow's setters also export the URI as ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``
    "so that subprocesses inherit it": every process started afterwards (a retraining job, a
    command the control room or a test runs) would take this process's MLflow instead of
    deriving its own from its settings (the embedded default comes from ``RAKUTEN_HOME`` only
    when ``MLFLOW_TRACKING_URI`` is unset). A child gets its URI from its own settings or from
    the environment its parent gives it explicitly, as ``LocalRetrainer.child_env`` does.
    """
    import mlflow

    before = {name: os.environ.get(name) for name in _URI_VARIABLES}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@functools.lru_cache(maxsize=16)
def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Raise :class:`RegistryUnavailableError` unless the MLflow server at ``uri`` answers /health."""
    import httpx

    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise RegistryUnavailableError(unreachable_message(uri, f"{exc.__class__.__name__}: {exc}")) from exc
    if response.status_code >= 500:
        raise RegistryUnavailableError(unreachable_message(uri, f"HTTP {response.status_code} on /health"))


def unreachable_message(uri: str, cause: str) -> str:
    return (
        f"MLflow at {redact_url(uri)} is unreachable ({cause}); nothing was registered or promoted. "
        "Start the tracking server or fix MLFLOW_TRACKING_URI."
    )


def _is_mlflow_error(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException)


def is_not_found(exc: BaseException) -> bool:
    return _is_mlflow_error(exc) and getattr(exc, "error_code", "") in NOT_FOUND_CODES


def is_unreachable(exc: BaseException) -> bool:
    """True for failures to reach or use the MLflow server (never for the data database's errors)."""
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
        if _is_mlflow_error(seen) and (
            getattr(seen, "error_code", "") in SERVER_FAILURE_CODES or "Max retries exceeded" in str(seen)
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def registry_errors(settings: Settings) -> Iterator[None]:
    """Turn MLflow's failures to reach the server, raised mid-operation, into RegistryUnavailableError."""
    try:
        yield
    except PlatformError:
        raise
    except Exception as exc:
        if is_unreachable(exc):
            raise RegistryUnavailableError(
                unreachable_message(settings.mlflow_tracking_uri, _first_line(exc))
            ) from exc
        raise


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def _embedded_store_missing(settings: Settings) -> bool:
    uri = settings.mlflow_tracking_uri
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()


# --- the registry lock and the audit row --------------------------------------------------


@contextmanager
def registry_lock(settings: Settings, model_name: str | None = None) -> Iterator[Any]:
    """A transaction holding the registry lock of ``model_name``; yields its connection.

    Postgres: ``SELECT ... FOR UPDATE`` on the ``registry_locks`` row. SQLite: ``BEGIN IMMEDIATE``
    (one writer at a time on the whole file). Committed on success, rolled back on error.
    """
    from sqlalchemy import select, update

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import RegistryLock, utcnow

    name = model_name or settings.registered_model
    upgrade(settings.database_url)
    engine = engine_for(settings.database_url)
    table = RegistryLock.__table__
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert

            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            from sqlalchemy.dialects.postgresql import insert
        conn.execute(insert(table).values(model_name=name, updated_at=utcnow()).on_conflict_do_nothing())
        conn.execute(select(table.c.model_name).where(table.c.model_name == name).with_for_update()).one()
        conn.execute(update(table).where(table.c.model_name == name).values(updated_at=utcnow()))
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


# --- reads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version as the platform reads it: lineage tags, run and aliases."""

    version: str
    run_id: str | None
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    creation_timestamp: int = 0
    status: str = ""

    @property
    def batch_ids(self) -> list[int]:
        """The load batches the version was trained on (its ``batch_ids`` tag)."""
        return [int(x) for x in (self.tags.get("batch_ids") or "").split(",") if x.strip()]

    @classmethod
    def of(cls, mv: Any) -> ModelVersionInfo:
        return cls(
            version=str(mv.version),
            run_id=mv.run_id,
            source=mv.source or "",
            tags=dict(mv.tags or {}),
            aliases=tuple(mv.aliases or ()),
            creation_timestamp=int(mv.creation_timestamp or 0),
            status=str(mv.status),
        )


class ModelRegistry:
    """The registered model of ``settings`` (``registered_model``, alias ``production_alias``)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.registered_model
        self.alias = settings.production_alias
        with registry_errors(settings):
            self.client = connect(settings)

    @contextmanager
    def _errors(self, missing: str | None = None) -> Iterator[None]:
        """The one mapping: not found -> ModelNotFoundError(``missing``), anything else the
        server did -> RegistryUnavailableError."""
        try:
            yield
        except PlatformError:
            raise
        except Exception as exc:
            cause = _first_line(exc)
            if is_not_found(exc):
                raise ModelNotFoundError(missing or cause) from exc
            if is_unreachable(exc) or _is_mlflow_error(exc):
                raise RegistryUnavailableError(
                    unreachable_message(self.settings.mlflow_tracking_uri, cause)
                ) from exc
            raise

    def aliases(self) -> dict[str, str]:
        """Alias -> version of the model; empty when the model is not registered yet."""
        try:
            with self._errors(missing="absent"):
                model = self.client.get_registered_model(self.name)
        except ModelNotFoundError:
            return {}
        return {alias: str(v) for alias, v in (model.aliases or {}).items()}

    def production_version(self) -> str | None:
        """The version behind the production alias, or None when nothing is in production yet."""
        return self.aliases().get(self.alias)

    def version(self, version: str | int) -> ModelVersionInfo:
        """One version; ModelNotFoundError when the model has no such version."""
        with self._errors(missing=f"registered model {self.name!r} has no version {version}"):
            return ModelVersionInfo.of(self.client.get_model_version(self.name, str(version)))

    def by_alias(self, alias: str | None = None) -> ModelVersionInfo:
        """The version behind ``alias`` (default: production); ModelNotFoundError when unset."""
        alias = alias or self.alias
        with self._errors(missing=f"registered model {self.name!r} has no alias @{alias}"):
            return ModelVersionInfo.of(self.client.get_model_version_by_alias(self.name, alias))

    def production(self) -> ModelVersionInfo | None:
        """The production version with its lineage, or None when the alias is not set."""
        try:
            return self.by_alias()
        except ModelNotFoundError:
            return None

    def versions(self) -> list[ModelVersionInfo]:
        """Every version of the model, in the registry's order."""
        with self._errors():
            found = self.client.search_model_versions(f"name='{self.name}'", max_results=1000)
        return [ModelVersionInfo.of(mv) for mv in found]

    def check(self) -> None:
        """Raise RegistryUnavailableError unless the registry answers (a missing model is an answer)."""
        self.aliases()

    def tag(self, version: str, tags: dict[str, str]) -> None:
        with self._errors():
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, str(version), key, value)

    # --- alias moves ----------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[AliasTransaction]:
        """The registry lock, with the alias read under it; rows commit only when the block,
        the alias move included, succeeds (so move the alias last)."""
        with registry_lock(self.settings, self.name) as conn:
            yield AliasTransaction(self, conn, self.production_version())

    def move_alias(
        self,
        to: str,
        expect: str | None,
        reason: str,
        actor: str,
        *,
        event: str = "rollback",
        tags: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
        also_record: tuple[tuple[str, dict[str, Any]], ...] = (),
    ) -> None:
        """Move the production alias to ``to`` if it still points to ``expect``, and record it.

        Compare-and-set under the registry lock: raises :class:`AliasChanged` (nothing moved,
        nothing recorded) when another writer moved the alias first. ``also_record`` rows
        (event type, columns) are written before the move's own row, in the same transaction.
        ``tags`` go on ``to`` once the move and its rows committed (a failed move leaves no tag
        claiming it happened); setting them is best-effort, as the recorded row is the account.
        """
        with self.locked() as txn:
            if txn.current != expect:
                raise AliasChanged(self.alias, expect, txn.current)
            for event_type, columns in also_record:
                txn.record(event_type, **columns)
            txn.record(
                event,
                version=to,
                previous_version=expect,
                decision=event,
                reason=reason,
                actor=actor,
                details=details,
            )
            txn.move(to)  # last: a failed move rolls the rows back with it
        if tags:
            try:
                self.tag(to, tags)
            except (RegistryUnavailableError, ModelNotFoundError) as exc:
                log.warning(
                    "@%s moved to version %s and recorded, but its tags were not set: %s", self.alias, to, exc
                )


@dataclass
class AliasTransaction:
    """What a holder of the registry lock may do: move the alias and add ``model_events`` rows."""

    registry: ModelRegistry
    conn: Any
    current: str | None

    def move(self, to: str) -> None:
        registry = self.registry
        if to != self.current:
            with registry._errors():
                registry.client.set_registered_model_alias(registry.name, registry.alias, to)
            self.current = to

    def record(self, event_type: str, **columns: Any) -> None:
        from sqlalchemy import insert

        from rakuten_mlops.db.models import ModelEvent

        self.conn.execute(
            insert(ModelEvent.__table__).values(
                event_type=event_type, model_name=self.registry.name, **columns
            )
        )


# --- one-shot reads for commands and pages ------------------------------------------------


def production_version(settings: Settings) -> str | None:
    """The version behind the production alias, or None (also before anything was registered)."""
    if _embedded_store_missing(settings):  # nothing was ever registered: skip MLflow's migrations
        return None
    return ModelRegistry(settings).production_version()


def production_lineage(settings: Settings) -> ModelVersionInfo | None:
    """The production version with its tags and ``batch_ids``, or None when there is none."""
    if _embedded_store_missing(settings):
        return None
    return ModelRegistry(settings).production()
