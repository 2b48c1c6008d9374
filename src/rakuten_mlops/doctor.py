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
staging folder, a version whose ``trained`` audit row is missing); they are listed so an operator
can clear them, and the jobs run again without minding them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rakuten_mlops.settings import Settings

VERSION_TAGS = ("f1_weighted", "batch_ids", "dataset_digest", "gate_decision")
RECENT_REPORTS = 200  # reports of each kind checked (newest first): the check stays quick


@dataclass(frozen=True)
class Finding:
    kind: str  # violation | leftover
    area: str  # data | registry | drift | estimate | training
    what: str


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

    def leftover(self, area: str, what: str) -> None:
        self.findings.append(Finding("leftover", area, what))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "violations": [asdict(f) for f in self.violations],
            "leftovers": [asdict(f) for f in self.leftovers],
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
                "drift", f"MLflow run {run_id} of drift report {report_id} is still marked running"
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
            result.leftover("estimate", f"MLflow run {run_id} of recorded estimates is still marked running")
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
            area, f"MLflow run {run_id} was left running by an interrupted job (nothing recorded)"
        )


def _check_training_runs(settings: Settings, client, registry, result: Consistency) -> None:
    registered = {mv.run_id for mv in registry.versions()} if registry is not None else set()
    for run in _experiment_runs(client, settings.training_experiment):
        run_id, status = run.info.run_id, run.info.status
        if status == "FINISHED" and run_id not in registered:
            result.violation("training", f"training run {run_id} finished without a registered version")
        elif status == "RUNNING":
            result.leftover("training", f"training run {run_id} was left running by an interrupted job")


def _check_report_folders(settings: Settings, rows, recent: int, result: Consistency) -> None:
    base = settings.reports_dir / "drift"
    if not base.is_dir():
        return
    named = {str(Path(p).parent) for *_, summary in rows if (p := (summary or {}).get("json_path"))}
    for folder in sorted(base.iterdir()):
        if folder.name.startswith("."):
            result.leftover("drift", f"{folder} is the staging folder of an interrupted drift check")
        elif str(folder) not in named and len(rows) < recent:  # older reports are not read
            result.leftover("drift", f"{folder} holds a drift report that was never recorded")
