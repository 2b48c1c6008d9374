"""`rakuten-mlops doctor`: do the data database, the MLflow registry and the report files agree?

Meant for after a crash (a job killed, a node lost): every job of the platform makes its result
visible at one commit point (a database transaction, an atomic rename, the creation of a registry
version with its tags), so whatever moment a job died at, what readers see is either complete
or absent. This command checks that, reading what the platform's readers read:

- load batches: a batch recorded as succeeded holds exactly its ``row_count`` products, and no
  product belongs to a batch that did not succeed (no half batch);
- the production alias: the version behind it is the top of the production history replayed
  from ``model_events`` (no alias moved without its recorded decision), and every version whose
  gate tag says promoted, or whose rollback tag says it was rolled back to, has that decision
  recorded (both tags are set after the commit; a recorded rollback whose tag is missing is not
  reported, since its reason is read from ``model_events``, never from the tag);
- registered versions carry their training tags (scores, lineage, gate decision);
- drift reports and performance estimates: every recorded report's files and MLflow run exist
  with their artifacts, and no finished MLflow run of those experiments lacks its record.

A *violation* is a disagreement a reader would take for the truth. A *leftover* is something a
killed job left behind that no reader takes for a result (an MLflow run still marked running, a
staging folder, a version whose ``trained`` audit row is missing, a loaded batch whose live
evaluation never ran); they are listed so an operator can clear them, and the jobs run again
without minding them.

:func:`clean` (``doctor --clean``) clears the leftovers that are provably abandoned: those whose
job last wrote them longer ago than ``older_than`` (a job still running keeps writing, or is
younger than that; a job's MLflow run carries its heartbeat). It removes staging and unrecorded report folders, marks runs left running as
``KILLED`` and measures a batch's missing live evaluation; it never touches a violation.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rakuten_mlops.settings import Settings

VERSION_TAGS = ("f1_weighted", "batch_ids", "dataset_digest", "gate_decision")
RECENT_REPORTS = 200  # reports of each kind checked (newest first): the check stays quick


DEFAULT_CLEAN_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class Cleanup:
    """How ``doctor --clean`` clears a leftover, and when its job last wrote it."""

    action: str  # remove (a folder) | kill-run (an MLflow run) | evaluate (a batch's live accuracy)
    target: str  # the folder, the run id or the batch id
    since: datetime  # UTC


@dataclass(frozen=True)
class Finding:
    kind: str  # violation | leftover
    area: str  # data | registry | drift | estimate | training
    what: str
    cleanup: Cleanup | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "area": self.area, "what": self.what}


@dataclass
class Consistency:
    findings: list[Finding] = field(default_factory=list)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "violation"]

    @property
    def leftovers(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "leftover"]

    @property
    def ok(self) -> bool:
        return not self.violations

    def violation(self, area: str, what: str) -> None:
        self.findings.append(Finding("violation", area, what))

    def leftover(self, area: str, what: str, cleanup: Cleanup | None = None) -> None:
        self.findings.append(Finding("leftover", area, what, cleanup))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "violations": [f.to_dict() for f in self.violations],
            "leftovers": [f.to_dict() for f in self.leftovers],
        }

    def describe(self) -> list[str]:
        if not self.findings:
            return ["consistent: load batches, registry, production alias and reports agree"]
        lines = [f"{f.kind}: [{f.area}] {f.what}" for f in self.violations + self.leftovers]
        verdict = f"{len(self.violations)} violation(s)" if self.violations else "consistent (no violation)"
        return [*lines, f"{verdict}, {len(self.leftovers)} leftover(s) of interrupted jobs"]


def check(settings: Settings, *, recent: int = RECENT_REPORTS) -> Consistency:
    """Every check of the module docstring; reads only (nothing is repaired or moved)."""
    from rakuten_mlops.db import engine_for, upgrade

    upgrade(settings.database_url)
    result = Consistency()
    with engine_for(settings.database_url).connect() as conn:
        _check_batches(conn, result)
        unevaluated = _unevaluated_batches(conn)
        drift_rows = _drift_rows(conn, recent)
        estimate_runs = _estimate_runs(conn, recent)
        events = _events(conn, settings.registered_model)
        from rakuten_mlops.training.registry import production_history

        history = production_history(conn, settings.registered_model)
    registry = _registry(settings)
    if registry is None:  # nothing registered yet (embedded store not created)
        if history:
            result.violation(
                "registry", f"model_events record production versions {history} but no registry exists"
            )
    else:
        _check_registry(registry, events, history, result)
        _check_live_evaluations(registry, unevaluated, result)
    client = _client(settings)
    if client is not None:
        _check_drift(settings, client, drift_rows, result)
        _check_estimates(settings, client, estimate_runs, result)
        _check_training_runs(settings, client, registry, result)
    _check_report_folders(settings, drift_rows, recent, result)
    return result


# --- data ---------------------------------------------------------------------------------


def _check_batches(conn, result: Consistency) -> None:
    from sqlalchemy import func, select

    from rakuten_mlops.db.models import LoadBatch, Product

    counts = select(Product.batch_id, func.count().label("n")).group_by(Product.batch_id).subquery()
    rows = conn.execute(
        select(LoadBatch.id, LoadBatch.status, LoadBatch.row_count, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.batch_id == LoadBatch.id)
        .order_by(LoadBatch.id)
    ).all()
    for batch_id, status, row_count, held in rows:
        if status == "succeeded" and held != row_count:
            result.violation(
                "data", f"load batch {batch_id} succeeded with {row_count} rows but holds {held}"
            )
        elif status != "succeeded" and held:
            result.violation("data", f"load batch {batch_id} is {status} but holds {held} products")
        elif status == "running":
            result.violation("data", f"load batch {batch_id} is recorded as running outside its transaction")


def _unevaluated_batches(conn) -> dict[int, datetime]:
    """Succeeded batches holding products but no live evaluation, with when they committed."""
    from sqlalchemy import exists, select

    from rakuten_mlops.db.models import LiveEvaluation, LoadBatch, Product

    rows = conn.execute(
        select(LoadBatch.id, LoadBatch.finished_at, LoadBatch.started_at)
        .where(
            LoadBatch.status == "succeeded",
            exists().where(Product.batch_id == LoadBatch.id),
            ~exists().where(LiveEvaluation.batch_id == LoadBatch.id),
        )
        .order_by(LoadBatch.id)
    ).all()
    return {batch_id: _utc(finished or started) for batch_id, finished, started in rows}


def _check_live_evaluations(registry, unevaluated: dict[int, datetime], result: Consistency) -> None:
    """A batch loaded after the production version's training data and never evaluated: the live
    evaluation of ``data load`` did not run (the job died after its commit, or the registry was
    down). Batches the production version was trained on are not live data for it."""
    production = registry.production()
    if production is None:
        return
    trained_on = set(production.batch_ids)
    for batch_id, since in unevaluated.items():
        if batch_id not in trained_on:
            result.leftover(
                "data",
                f"load batch {batch_id} has no live evaluation (its load's evaluation never ran)",
                Cleanup("evaluate", str(batch_id), since),
            )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- registry and the production alias ----------------------------------------------------


def _events(conn, model_name: str) -> list[tuple[str, str | None, str | None]]:
    from sqlalchemy import select

    from rakuten_mlops.db.models import ModelEvent

    return [
        (t, v, d)
        for t, v, d in conn.execute(
            select(ModelEvent.event_type, ModelEvent.version, ModelEvent.decision)
            .where(ModelEvent.model_name == model_name)
            .order_by(ModelEvent.id)
        ).all()
    ]


def _registry(settings: Settings):
    from rakuten_mlops.registry import ModelRegistry, _embedded_store_missing

    if _embedded_store_missing(settings):
        return None
    return ModelRegistry(settings)


def _check_registry(registry, events, history: list[str], result: Consistency) -> None:
    from rakuten_mlops.training.registry import ROLLBACK_TAG

    alias = registry.production_version()
    top = history[-1] if history else None
    if alias != top:
        if alias is None:
            result.violation(
                "registry", f"model_events put version {top} in production but @{registry.alias} is unset"
            )
        else:
            result.violation(
                "registry",
                f"@{registry.alias} points to version {alias} but the recorded production history "
                f"ends at {top or 'nothing'} (an alias move without its model_events row)",
            )
    decided = {(t, v) for t, v, _d in events}
    trained = {v for t, v, _d in events if t == "trained"}
    for mv in registry.versions():
        missing = [tag for tag in VERSION_TAGS if not mv.tags.get(tag)]
        if missing:
            result.violation("registry", f"version {mv.version} lacks its training tags {missing}")
        gate = mv.tags.get("gate_decision")
        if gate in ("promoted", "forced") and (gate, mv.version) not in decided:
            result.violation(
                "registry", f"version {mv.version} is tagged {gate} but model_events has no such decision"
            )
        if mv.tags.get(ROLLBACK_TAG) and ("rollback", mv.version) not in decided:
            result.violation(
                "registry",
                f"version {mv.version} is tagged rolled back to but model_events has no such rollback",
            )
        if mv.version not in trained:
            result.leftover("registry", f"version {mv.version} has no 'trained' row in model_events")


# --- reports ------------------------------------------------------------------------------


def _client(settings: Settings):
    from rakuten_mlops.registry import _embedded_store_missing, connect, registry_errors

    if _embedded_store_missing(settings):
        return None
    with registry_errors(settings):
        return connect(settings)


def _drift_rows(conn, recent: int) -> list[tuple[int, str | None, str | None, dict]]:
    from sqlalchemy import select

    from rakuten_mlops.db.models import DriftReport

    query = select(DriftReport.id, DriftReport.html_path, DriftReport.mlflow_run_id, DriftReport.summary)
    return list(conn.execute(query.order_by(DriftReport.id.desc()).limit(recent)).all())


def _estimate_runs(conn, recent: int) -> dict[str | None, int]:
    from sqlalchemy import func, select

    from rakuten_mlops.db.models import PerformanceEstimate as E

    rows = conn.execute(
        select(E.mlflow_run_id, func.count())
        .group_by(E.mlflow_run_id)
        .order_by(func.max(E.id).desc())
        .limit(recent)
    ).all()
    return {run_id: n for run_id, n in rows}


def _run(client, run_id: str):
    from rakuten_mlops.registry import is_not_found

    try:
        return client.get_run(run_id)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


def _artifacts(client, run_id: str, folder: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def _experiment_runs(client, name: str):
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], max_results=RECENT_REPORTS)


def _check_drift(settings: Settings, client, rows, result: Consistency) -> None:
    recorded = set()
    for report_id, html_path, run_id, summary in rows:
        recorded.add(run_id)
        for path in (html_path, (summary or {}).get("json_path")):
            if path and not Path(path).is_file():
                result.violation("drift", f"drift report {report_id} names {path}, which does not exist")
        run = _run(client, run_id) if run_id else None
        if run is None:
            result.violation(
                "drift", f"drift report {report_id} names MLflow run {run_id}, which does not exist"
            )
        elif "drift_report/summary.json" not in _artifacts(client, run_id, "drift_report"):
            result.violation(
                "drift", f"MLflow run {run_id} of drift report {report_id} lacks its summary.json"
            )
        elif run.info.status == "RUNNING":
            result.leftover(
                "drift",
                f"MLflow run {run_id} of drift report {report_id} is still marked running",
                _kill(run),
            )
    for run in _experiment_runs(client, settings.drift_experiment):
        _unrecorded_run(run, recorded, "drift", result)


def _check_estimates(settings: Settings, client, runs: dict[str | None, int], result: Consistency) -> None:
    for run_id, n in runs.items():
        run = _run(client, run_id) if run_id else None
        if run is None:
            result.violation(
                "estimate", f"{n} performance estimate(s) name MLflow run {run_id}, which does not exist"
            )
            continue
        expected = run.data.params.get("windows")
        if expected is not None and int(expected) != n:
            result.violation(
                "estimate", f"MLflow run {run_id} estimated {expected} window(s) but {n} are recorded"
            )
        if "estimate/summary.json" not in _artifacts(client, run_id, "estimate"):
            result.violation("estimate", f"MLflow run {run_id} of recorded estimates lacks its summary.json")
        elif run.info.status == "RUNNING":
            result.leftover(
                "estimate", f"MLflow run {run_id} of recorded estimates is still marked running", _kill(run)
            )
    for run in _experiment_runs(client, settings.estimate_experiment):
        _unrecorded_run(run, set(runs), "estimate", result)


def _unrecorded_run(run, recorded: set, area: str, result: Consistency) -> None:
    run_id, status = run.info.run_id, run.info.status
    if run_id in recorded:
        return
    if status == "FINISHED":
        result.violation(
            area, f"MLflow run {run_id} finished but its report was never recorded in the database"
        )
    elif status == "RUNNING":
        result.leftover(
            area, f"MLflow run {run_id} was left running by an interrupted job (nothing recorded)", _kill(run)
        )


def _kill(run) -> Cleanup:
    """Mark ``run`` KILLED once its job last wrote it long enough ago: its start, or its last
    heartbeat (``registry.heartbeat``), which a live job renews however long it runs."""
    from rakuten_mlops.registry import last_heartbeat

    started = datetime.fromtimestamp((run.info.start_time or 0) / 1000, UTC)
    beat = last_heartbeat(run)
    return Cleanup("kill-run", run.info.run_id, max(started, _utc(beat)) if beat else started)


def _check_training_runs(settings: Settings, client, registry, result: Consistency) -> None:
    registered = {mv.run_id for mv in registry.versions()} if registry is not None else set()
    for run in _experiment_runs(client, settings.training_experiment):
        run_id, status = run.info.run_id, run.info.status
        if status == "FINISHED" and run_id not in registered:
            result.violation("training", f"training run {run_id} finished without a registered version")
        elif status == "RUNNING":
            result.leftover(
                "training", f"training run {run_id} was left running by an interrupted job", _kill(run)
            )


def _check_report_folders(settings: Settings, rows, recent: int, result: Consistency) -> None:
    base = settings.reports_dir / "drift"
    if not base.is_dir():
        return
    named = {str(Path(p).parent) for *_, summary in rows if (p := (summary or {}).get("json_path"))}
    for folder in sorted(base.iterdir()):
        if folder.name.startswith("."):
            result.leftover(
                "drift", f"{folder} is the staging folder of an interrupted drift check", _remove(folder)
            )
        elif str(folder) not in named and len(rows) < recent:  # older reports are not read
            result.leftover(
                "drift", f"{folder} holds a drift report that was never recorded", _remove(folder)
            )


def _remove(path: Path) -> Cleanup:
    """Removal of ``path``, dated by the newest write to it or to anything in it (now, when it
    changes while it is read: a job is at work in it)."""
    try:
        stamps = [p.stat().st_mtime for p in (path, *path.rglob("*"))]
    except OSError:
        return Cleanup("remove", str(path), datetime.now(UTC))
    return Cleanup("remove", str(path), datetime.fromtimestamp(max(stamps), UTC))


# --- clean --------------------------------------------------------------------------------


@dataclass
class Cleaning:
    """What ``doctor --clean`` did, and what it left (with why)."""

    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {"done": self.done, "kept": self.kept}

    def describe(self) -> list[str]:
        return [f"cleaned: {line}" for line in self.done] + [f"kept: {line}" for line in self.kept]


def clean(
    settings: Settings,
    found: Consistency,
    *,
    older_than: timedelta = DEFAULT_CLEAN_AGE,
    now: datetime | None = None,
) -> Cleaning:
    """Clear the leftovers of ``found`` whose job last wrote them more than ``older_than`` ago.

    Younger leftovers may belong to a job still running and are kept. Each action first checks
    that the leftover is still one (a run still running, a batch still unevaluated), so two
    cleans at once, or a job finishing meanwhile, do no harm."""
    cutoff = (now or datetime.now(UTC)) - older_than
    cleaning = Cleaning()
    for finding in found.leftovers:
        cleanup = finding.cleanup
        if cleanup is None:
            cleaning.kept.append(f"{finding.what}: nothing reads it; left as is")
        elif cleanup.since > cutoff:
            cleaning.kept.append(
                f"{finding.what}: last written {cleanup.since.isoformat(timespec='seconds')}, "
                f"less than {older_than} ago (its job may still run)"
            )
        else:
            try:
                cleaning.done.append(_ACTIONS[cleanup.action](settings, cleanup.target))
            except Exception as exc:  # one leftover that cannot be cleared does not stop the others
                cleaning.kept.append(f"{finding.what}: not cleared ({exc.__class__.__name__}: {exc})")
    return cleaning


def _remove_path(_settings: Settings, target: str) -> str:
    path = Path(target)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    return f"removed {path}"


def _kill_run(settings: Settings, run_id: str) -> str:
    from rakuten_mlops.registry import connect, registry_errors

    with registry_errors(settings):
        client = connect(settings)
        status = client.get_run(run_id).info.status
        if status != "RUNNING":
            return f"MLflow run {run_id} is {status} now: left as is"
        client.set_terminated(run_id, status="KILLED")
    return f"marked MLflow run {run_id} KILLED"


def _evaluate_batch(settings: Settings, target: str) -> str:
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import LiveEvaluation
    from rakuten_mlops.monitoring.live import evaluate_live

    batch_id = int(target)
    with engine_for(settings.database_url).connect() as conn:
        if conn.execute(select(LiveEvaluation.id).where(LiveEvaluation.batch_id == batch_id)).first():
            return f"load batch {batch_id} has a live evaluation now: left as is"
    measured = evaluate_live(settings, batch_id)
    if measured is None:
        return f"load batch {batch_id}: no production model or no products, nothing to measure"
    return measured.describe()


_ACTIONS = {"remove": _remove_path, "kill-run": _kill_run, "evaluate": _evaluate_batch}
