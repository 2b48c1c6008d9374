"""What the control room's pages show and do, as plain functions over the platform's own code.

Reads go to the data database (SQLAlchemy), the MLflow registry (the training package) and the
API (HTTP); actions call the same functions as the CLI, or the API's admin routes. No page
shells out to docker or kubectl. Functions return pandas frames or small dataclasses so that
tests can check them without Streamlit.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rakuten_mlops.data.categories import category_name
from rakuten_mlops.settings import Settings
from rakuten_mlops.ui.api import APIError, PlatformAPI

SEVERITY_LEVEL = {"none": 0, "low": 1, "medium": 2, "high": 3}


class ActionRefused(RuntimeError):
    """An action cannot run as asked (no admin token, missing reason, nothing to load...)."""


# --- database reads ---------------------------------------------------------------------------


def _rows(settings: Settings, statement) -> list[dict[str, Any]]:
    from rakuten_mlops.db import engine_for, upgrade

    upgrade(settings.database_url)
    with engine_for(settings.database_url).connect() as conn:
        return [dict(r) for r in conn.execute(statement).mappings()]


def latest_load(settings: Settings) -> dict[str, Any] | None:
    from sqlalchemy import select

    from rakuten_mlops.db.models import LoadBatch

    rows = _rows(settings, select(LoadBatch.__table__).order_by(LoadBatch.id.desc()).limit(1))
    return rows[0] if rows else None


def default_source(settings: Settings) -> str:
    """The source of the newest successful load: the usual place to take the next batch from."""
    from sqlalchemy import select

    from rakuten_mlops.db.models import LoadBatch

    rows = _rows(
        settings,
        select(LoadBatch.source)
        .where(LoadBatch.status == "succeeded")
        .order_by(LoadBatch.id.desc())
        .limit(1),
    )
    return rows[0]["source"] if rows else ""


def recent_predictions(settings: Settings, limit: int = 20) -> pd.DataFrame:
    from sqlalchemy import select

    from rakuten_mlops.db.models import Prediction as P

    rows = _rows(
        settings,
        select(
            P.created_at,
            P.model_version,
            P.prdtypecode,
            P.confidence,
            P.text_length,
            P.word_count,
            P.productid,
        )
        .order_by(P.id.desc())
        .limit(limit),
    )
    frame = pd.DataFrame(
        rows,
        columns=[
            "created_at",
            "model_version",
            "prdtypecode",
            "confidence",
            "text_length",
            "word_count",
            "productid",
        ],
    )
    frame.insert(3, "category", [category_name(c) for c in frame["prdtypecode"]])
    return frame


def model_events(
    settings: Settings, event_types: tuple[str, ...] | None = None, limit: int = 50
) -> pd.DataFrame:
    """``model_events`` rows, newest first (all types, or only ``event_types``)."""
    from sqlalchemy import select

    from rakuten_mlops.db.models import ModelEvent as E

    statement = select(
        E.id, E.created_at, E.event_type, E.version, E.previous_version, E.decision,
        E.candidate_f1, E.production_f1, E.reason, E.actor, E.details,
    ).order_by(E.id.desc()).limit(limit)  # fmt: skip
    if event_types:
        statement = statement.where(E.event_type.in_(event_types))
    frame = pd.DataFrame(_rows(settings, statement), columns=[c.name for c in statement.selected_columns])
    frame["details"] = [json.dumps(d, default=str) if d else "" for d in frame["details"]]
    return frame


def drift_reports(settings: Settings, limit: int = 100) -> list[dict[str, Any]]:
    """The latest drift checks, newest first, with their JSON summary."""
    from sqlalchemy import select

    from rakuten_mlops.db.models import DriftReport

    return _rows(settings, select(DriftReport.__table__).order_by(DriftReport.id.desc()).limit(limit))


def drift_tests_frame(report: dict[str, Any]) -> pd.DataFrame:
    """One row per statistical test of a drift report (feature, test, score, threshold, drifted)."""
    tests = (report.get("summary") or {}).get("tests") or []
    return pd.DataFrame(tests, columns=["feature", "test", "score", "threshold", "drifted"])


def drift_scores_over_time(reports: list[dict[str, Any]]) -> pd.DataFrame:
    """Wide frame: one row per report time, one column per ``feature/test`` score."""
    rows = [
        {
            "created_at": r["created_at"],
            "series": f"{t.get('feature')}/{t.get('test')}",
            "score": t.get("score"),
        }
        for r in reports
        for t in (r.get("summary") or {}).get("tests") or []
        if t.get("score") is not None
    ]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return frame.pivot_table(
        index="created_at", columns="series", values="score", aggfunc="last"
    ).sort_index()


def drift_report_html(settings: Settings, report: dict[str, Any]) -> tuple[Path | None, str]:
    """(HTML file to embed, note): the report's own file, else its copy in the MLflow run."""
    path = Path(report["html_path"]) if report.get("html_path") else None
    if path is not None and path.is_file():
        return path, f"report file {path}"
    run_id = report.get("mlflow_run_id")
    if run_id:
        try:
            from mlflow import MlflowClient

            from rakuten_mlops.training.tracking import configure_mlflow

            configure_mlflow(settings)
            client = MlflowClient()
            html = _find_html(client, run_id, "")
            if html:
                import mlflow.artifacts

                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=html)
                return Path(local), f"report from MLflow run {run_id} ({html})"
        except Exception as exc:  # registry down or run gone: say so, keep the page
            return None, f"report not readable here ({path or 'no file'}); MLflow run {run_id}: {exc}"
    return None, f"the report file is not readable from the control room ({path or 'no file recorded'})"


def _find_html(client, run_id: str, folder: str, depth: int = 0) -> str | None:
    for info in client.list_artifacts(run_id, folder or None):
        if info.is_dir and depth < 2:
            found = _find_html(client, run_id, info.path, depth + 1)
            if found:
                return found
        elif info.path.endswith(".html"):
            return info.path
    return None


def retrain_decisions(settings: Settings, limit: int = 20) -> pd.DataFrame:
    """``retrain_decision`` events: whether a retraining was asked for, and why."""
    frame = model_events(settings, ("retrain_decision",), limit)
    frame["retrain"] = [
        _retrain_flag(d, dec) for d, dec in zip(frame["details"], frame["decision"], strict=True)
    ]
    return frame[["created_at", "retrain", "decision", "version", "reason", "actor"]]


def _retrain_flag(details: str, decision: str | None) -> bool | None:
    if details:
        value = json.loads(details).get("retrain")
        if isinstance(value, bool):
            return value
    if decision:
        return decision.lower() in ("retrain", "true", "yes")
    return None


def live_evaluations(settings: Settings, limit: int = 500) -> pd.DataFrame:
    from sqlalchemy import select

    from rakuten_mlops.db.models import LiveEvaluation as L

    statement = select(L.created_at, L.model_version, L.batch_id, L.n_rows, L.f1_weighted, L.accuracy)
    statement = statement.order_by(L.id.desc()).limit(limit)
    return pd.DataFrame(_rows(settings, statement), columns=[c.name for c in statement.selected_columns])


def live_f1_over_time(frame: pd.DataFrame) -> pd.DataFrame:
    """Wide frame: live weighted F1 per model version (columns) over time."""
    if frame.empty:
        return frame
    wide = frame.pivot_table(
        index="created_at", columns="model_version", values="f1_weighted", aggfunc="last"
    )
    wide.columns = [f"v{c}" for c in wide.columns]
    return wide.sort_index()


# --- Prometheus -----------------------------------------------------------------------------------

PROMETHEUS_PANELS = {  # label -> PromQL over the API's metrics (names in docs/architecture.md)
    "Requests per second (5m)": "sum(rate(rakuten_http_requests_total[5m]))",
    "p95 latency, seconds (5m)": "histogram_quantile(0.95, sum by (le) "
    "(rate(rakuten_http_request_duration_seconds_bucket[5m])))",
    "Predictions (1h)": "sum(increase(rakuten_predictions_total[1h]))",
    "Drift severity (0-3)": "max(rakuten_drift_severity)",
}


def prometheus_query(settings: Settings, promql: str) -> list[dict[str, Any]]:
    """Instant query: one ``{"labels": {...}, "value": float}`` per series (empty when none)."""
    import httpx

    if not settings.prometheus_url:
        raise ActionRefused("RAKUTEN_PROMETHEUS_URL is not set")
    url = settings.prometheus_url.rstrip("/") + "/api/v1/query"
    response = httpx.get(url, params={"query": promql}, timeout=5.0)
    body = response.json()
    if response.status_code != 200 or body.get("status") != "success":
        raise APIError(
            f"Prometheus answered {response.status_code}: {body.get('error', response.text[:200])}"
        )
    return [
        {"labels": r.get("metric", {}), "value": float(r["value"][1])} for r in body["data"].get("result", [])
    ]


def served_models(settings: Settings) -> pd.DataFrame:
    """``rakuten_model_info`` series: which version every scraped API instance serves."""
    rows = [
        {**r["labels"], "instance": r["labels"].get("instance", "")}
        for r in prometheus_query(settings, "rakuten_model_info")
    ]
    return pd.DataFrame(rows, columns=["instance", "name", "version", "alias"])


# --- data ----------------------------------------------------------------------------------


def data_status(settings: Settings):
    from rakuten_mlops.data.status import data_status as compute

    return compute(settings)


def rows_per_class_frame(status) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"prdtypecode": code, "category": category_name(code), "rows": n}
            for code, n in status.rows_per_class.items()
        ],
        columns=["prdtypecode", "category", "rows"],
    )


def batches_frame(status) -> pd.DataFrame:
    return pd.DataFrame(
        status.batches[::-1],
        columns=["id", "status", "row_start", "row_end", "row_count", "started_at", "finished_at", "message"],
    )


def loaded_share(status) -> float | None:
    """Loaded share of the newest source (``None`` before the first load)."""
    shares = [s.get("loaded_share") for s in status.sources if s.get("loaded_share") is not None]
    return shares[-1] if shares else None


def load_next_batch(settings: Settings, source: str, batch_fraction: float, initial_fraction: float = 0.4):
    """Add the next slice of ``source`` to ``products`` (same loader and audit as ``data load``)."""
    from rakuten_mlops.data.loader import LoadPlan
    from rakuten_mlops.data.loader import load_next_batch as load

    if not source.strip():
        raise ActionRefused("give the folder of the source CSV files to load from")
    plan = LoadPlan(initial_fraction=initial_fraction, batch_fraction=batch_fraction)
    return load(settings, Path(source.strip()), plan)


LOAD_WORKFLOW = ("CronWorkflow", "incremental-load")
DRIFT_WORKFLOW = ("CronWorkflow", "drift-check")


def submit_workflow(settings: Settings, workflow: tuple[str, str]) -> str:
    """Start one run of an installed Argo workflow now; returns a line naming the new Workflow."""
    from rakuten_mlops.ui import argo

    kind, name = workflow
    started = argo.submit(settings, kind, name)
    return f"submitted {kind} {name}: Workflow {started['name']} ({started['phase']}) in namespace {settings.namespace}"


# --- registry and training ---------------------------------------------------------------------

VERSION_COLUMNS = [
    "version", "aliases", "created_at", "f1_weighted", "f1_macro", "accuracy", "train_rows", "test_rows",
    "batch_ids", "dataset_digest", "git_sha", "model_kind", "gate_decision", "gate_reason", "run_id",
]  # fmt: skip


def versions_frame(settings: Settings) -> pd.DataFrame:
    """Every registered version, newest first: scores, lineage, aliases, gate decision."""
    from rakuten_mlops.training.registry import list_versions

    rows = []
    for info in list_versions(settings):
        row = {
            k: info.tag(k) for k in VERSION_COLUMNS if k not in ("version", "aliases", "created_at", "run_id")
        }
        for metric in ("f1_weighted", "f1_macro", "accuracy"):
            row[metric] = float(row[metric]) if row[metric] else None
        rows.append(
            {
                **row,
                "version": info.version,
                "aliases": ", ".join(info.aliases),
                "created_at": info.created_at,
                "run_id": info.run_id,
            }  # fmt: skip
        )
    return pd.DataFrame(rows, columns=VERSION_COLUMNS)


def production_summary(versions: pd.DataFrame, alias: str = "production") -> dict[str, Any] | None:
    """The production row of ``versions_frame`` as a dict, or None."""
    if versions.empty:
        return None
    mask = versions["aliases"].str.split(", ").apply(lambda a: alias in a)
    return versions[mask].iloc[0].to_dict() if mask.any() else None


def training_runs(settings: Settings, limit: int = 50) -> pd.DataFrame:
    """Runs of the training experiment (also those whose version was never promoted)."""
    from mlflow import MlflowClient

    from rakuten_mlops.training.tracking import configure_mlflow, registry_errors

    configure_mlflow(settings)
    client = MlflowClient()
    columns = ["run_name", "status", "start_time", "model_kind", "f1_weighted", "f1_macro", "accuracy", "train_rows",
               "run_id"]  # fmt: skip
    with registry_errors(settings):
        experiment = client.get_experiment_by_name(settings.training_experiment)
        if experiment is None:
            return pd.DataFrame(columns=columns)
        runs = client.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit
        )
    rows = [
        {
            "run_name": r.info.run_name,
            "status": r.info.status,
            "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
            "model_kind": r.data.tags.get("model_kind", ""),
            "f1_weighted": r.data.metrics.get("f1_weighted"),
            "f1_macro": r.data.metrics.get("f1_macro"),
            "accuracy": r.data.metrics.get("accuracy"),
            "train_rows": r.data.params.get("train_rows"),
            "run_id": r.info.run_id,
        }
        for r in runs
    ]
    return pd.DataFrame(rows, columns=columns)


def per_class_f1(settings: Settings, run_id: str) -> pd.DataFrame:
    """F1 of every class on the test split, from the run's ``f1_class_<code>`` metrics."""
    from mlflow import MlflowClient

    from rakuten_mlops.training.tracking import configure_mlflow, registry_errors

    configure_mlflow(settings)
    with registry_errors(settings):
        metrics = MlflowClient().get_run(run_id).data.metrics
    rows = [
        {
            "prdtypecode": int(k.removeprefix("f1_class_")),
            "category": category_name(int(k.removeprefix("f1_class_"))),
            "f1": v,
        }  # fmt: skip
        for k, v in metrics.items()
        if k.startswith("f1_class_")
    ]
    return pd.DataFrame(rows, columns=["prdtypecode", "category", "f1"]).sort_values(
        "prdtypecode", ignore_index=True
    )


def confusion_matrix_image(settings: Settings, run_id: str) -> bytes | None:
    """The run's ``evaluation/confusion_matrix.png``, or None when it has none."""
    import mlflow.artifacts

    from rakuten_mlops.training.tracking import configure_mlflow

    configure_mlflow(settings)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="evaluation/confusion_matrix.png"
        )
    except Exception:
        return None
    return Path(local).read_bytes()


# --- admin actions -------------------------------------------------------------------------------


def check_admin_token(settings: Settings, token: str | None) -> tuple[bool, str]:
    """(allowed, why): the token must equal this process's RAKUTEN_ADMIN_TOKEN, or be accepted by the API."""
    if not token:
        return False, "admin actions are locked: type the admin token in the sidebar"
    if settings.admin_token is not None:
        if hmac.compare_digest(token.encode(), settings.admin_token.get_secret_value().encode()):
            return True, "admin token accepted"
        return False, "wrong admin token"
    try:
        verdict = PlatformAPI(settings.api_url, token).admin_routes()
    except APIError as exc:
        return False, f"cannot check the token: RAKUTEN_ADMIN_TOKEN is not set here and {exc}"
    if verdict == "accepted":
        return True, "admin token accepted by the API"
    if verdict == "refused":
        return False, "wrong admin token (refused by the API)"
    return False, "the API has no admin routes (RAKUTEN_ADMIN_TOKEN unset there) and none is set here"


@dataclass
class TrainingJob:
    """A retraining started from the control room: through the API, or as a local process."""

    id: str
    via: str  # api | local
    status: str = "running"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status != "running"

    @property
    def decision(self) -> dict[str, Any] | None:
        return self.info.get("decision")


def start_training(settings: Settings, token: str) -> TrainingJob:
    """``POST /admin/retrain`` when the API takes it; otherwise ``train --promote`` as a background process."""
    api = PlatformAPI(settings.api_url, token)
    try:
        info = api.retrain()
        return TrainingJob(info["id"], "api", info.get("status", "running"), info)
    except APIError as exc:
        if exc.status_code == 409:  # a job is already running: say so rather than start another
            raise ActionRefused(str(exc)) from exc
        if exc.status_code not in (None, 401, 404, 501, 502):
            raise
    from rakuten_mlops.serving.retrain import LocalRetrainer

    info = LocalRetrainer(settings).start()
    return TrainingJob(info["id"], "local", info["status"], info)


def training_status(settings: Settings, job: TrainingJob, token: str | None) -> TrainingJob:
    if job.via == "api":
        info = PlatformAPI(settings.api_url, token).retrain_status(job.id)
    else:
        from rakuten_mlops.serving.retrain import LocalRetrainer

        info = LocalRetrainer(settings).status(job.id)
    return TrainingJob(job.id, job.via, info.get("status", "running"), info)


@dataclass
class ActionResult:
    message: str
    ok: bool = True
    details: list[str] = field(default_factory=list)


def promote_version(
    settings: Settings, version: str, reason: str, *, force: bool, token: str | None
) -> ActionResult:
    """Run the promotion gate (or force it) for ``version``; then ask the API to serve the new version now."""
    from rakuten_mlops.training.registry import promote

    if not reason.strip():
        raise ActionRefused("give a reason: it is recorded with the decision")
    decision = promote(settings, version, force=force, reason=reason.strip(), actor="ui")
    details = list(decision.reasons)
    if not force:
        details.insert(0, f"reason given: {reason.strip()}")
    if decision.promoted:
        details.append(_reload_api(settings, token))
        label = "forced into production" if decision.forced else "promoted to production"
        return ActionResult(f"version {version} {label}", True, details)
    return ActionResult(f"the gate refused version {version}", False, details)


def rollback_production(settings: Settings, to: str | None, reason: str, token: str | None) -> ActionResult:
    """Move production back (through the API, which then serves it at once; else in the registry)."""
    if not reason.strip():
        raise ActionRefused("give a reason: it is recorded with the rollback")
    try:
        out = PlatformAPI(settings.api_url, token).rollback(to, reason.strip())
        return ActionResult(
            f"production rolled back to version {out.get('production_version')}",
            details=[f"the API now serves version {out.get('model_version')}"],
        )
    except APIError as exc:
        if exc.status_code not in (None, 401, 404, 501):
            raise ActionRefused(str(exc)) from exc
        api_note = f"API not used ({exc}); the API picks the alias up on its next poll"
    from rakuten_mlops.training.registry import rollback

    result = rollback(settings, to=to, reason=reason.strip(), actor="ui")
    return ActionResult(
        f"production rolled back from version {result.from_version} to version {result.to_version}",
        details=[api_note],
    )


def _reload_api(settings: Settings, token: str | None) -> str:
    try:
        out = PlatformAPI(settings.api_url, token).reload()
    except APIError as exc:
        return f"the API will pick the new version up on its next alias poll ({exc})"
    return f"the API now serves version {out.get('model_version')}"


# --- predictions ----------------------------------------------------------------------------------


def predict(settings: Settings, designation: str, description: str, k: int = 5) -> dict[str, Any]:
    if not designation.strip():
        raise ActionRefused("the designation (product title) is required")
    return PlatformAPI(settings.api_url).predict(designation, description, k)


def top_k_frame(prediction: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"class": f"{c['prdtypecode']} {c['category']}", "probability": c["probability"]}
            for c in prediction.get("top_k", [])
        ],
        columns=["class", "probability"],
    )
