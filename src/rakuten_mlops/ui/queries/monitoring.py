"""Monitoring page: drift reports and scores, retrain decisions, live F1, estimated F1 beside
realized F1, Prometheus panels."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from rakuten_mlops.settings import Settings
from rakuten_mlops.ui.api import APIError
from rakuten_mlops.ui.queries import ActionRefused, fetch_rows, model_events


def drift_reports(settings: Settings, limit: int = 100) -> list[dict[str, Any]]:
    """The latest drift checks, newest first, with their JSON summary."""
    from sqlalchemy import select

    from rakuten_mlops.db.models import DriftReport

    return fetch_rows(settings, select(DriftReport.__table__).order_by(DriftReport.id.desc()).limit(limit))


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
            from rakuten_mlops.registry import connect

            client = connect(settings)
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
    return pd.DataFrame(fetch_rows(settings, statement), columns=[c.name for c in statement.selected_columns])


def live_f1_over_time(frame: pd.DataFrame) -> pd.DataFrame:
    """Wide frame: live weighted F1 per model version (columns) over time."""
    if frame.empty:
        return frame
    wide = frame.pivot_table(
        index="created_at", columns="model_version", values="f1_weighted", aggfunc="last"
    )
    wide.columns = [f"v{c}" for c in wide.columns]
    return wide.sort_index()


def feedback_counts(settings: Settings, now: datetime | None = None) -> pd.DataFrame:
    """Labels received by ``POST /feedback`` per source and model version: all, last 24 h, newest."""
    from sqlalchemy import case, func, select

    from rakuten_mlops.db.models import PredictionLabel as L

    since = (now or datetime.now(UTC)) - timedelta(days=1)
    statement = (
        select(
            L.source,
            L.model_version,
            func.count().label("labels"),
            func.sum(case((L.received_at >= since, 1), else_=0)).label("last_24h"),
            func.max(L.received_at).label("last_received"),
        )
        .group_by(L.source, L.model_version)
        .order_by(L.source, L.model_version)
    )
    frame = pd.DataFrame(
        fetch_rows(settings, statement), columns=[c.name for c in statement.selected_columns]
    )
    frame["last_24h"] = frame["last_24h"].fillna(0).astype(int)
    return frame


def feedback_evaluations(settings: Settings, limit: int = 500) -> pd.DataFrame:
    """Realized F1 per model version from feedback labels (``rakuten-mlops evaluate-feedback``)."""
    from sqlalchemy import select

    from rakuten_mlops.db.models import FeedbackEvaluation as F

    statement = select(
        F.created_at, F.model_version, F.window_start, F.window_end, F.n_rows, F.f1_weighted, F.f1_macro, F.accuracy
    ).order_by(F.id.desc()).limit(limit)  # fmt: skip
    return pd.DataFrame(fetch_rows(settings, statement), columns=[c.name for c in statement.selected_columns])


def performance_estimates(settings: Settings, limit: int = 500) -> pd.DataFrame:
    """``rakuten-mlops estimate`` windows, newest first: estimate, interval, trust, realized F1."""
    from sqlalchemy import select

    from rakuten_mlops.db.models import PerformanceEstimate as E

    statement = select(
        E.window_end, E.model_version, E.window, E.n, E.f1_weighted, E.f1_weighted_low, E.f1_weighted_high,
        E.f1_macro, E.accuracy, E.trusted, E.realized_f1_weighted, E.n_labelled,
    ).order_by(E.id.desc()).limit(limit)  # fmt: skip
    return pd.DataFrame(fetch_rows(settings, statement), columns=[c.name for c in statement.selected_columns])


def estimated_vs_realized(frame: pd.DataFrame) -> pd.DataFrame:
    """Wide frame over window ends: estimated weighted F1, its interval and realized F1 per version."""
    if frame.empty:
        return frame
    parts = []
    for column, label in (
        ("f1_weighted", "estimated"),
        ("f1_weighted_low", "estimated 5%"),
        ("f1_weighted_high", "estimated 95%"),
        ("realized_f1_weighted", "realized"),
    ):
        wide = frame.pivot_table(index="window_end", columns="model_version", values=column, aggfunc="last")
        wide.columns = [f"v{c} {label}" for c in wide.columns]
        parts.append(wide)
    return pd.concat(parts, axis=1).sort_index()


PROMETHEUS_PANELS = {  # label -> PromQL over the API's metrics (names in docs/architecture.md)
    "Requests per second (5m)": "sum(rate(rakuten_http_requests_total[5m]))",
    "p95 latency, seconds (5m)": "histogram_quantile(0.95, sum by (le) "
    "(rate(rakuten_http_request_duration_seconds_bucket[5m])))",
    "Predictions (1h)": "sum(increase(rakuten_predictions_total[1h]))",
    "Drift severity (0-3)": "max(rakuten_drift_severity)",
}


def _instant_query(settings: Settings, promql: str) -> list[dict[str, Any]]:
    """The ``data.result`` of one instant query on the configured Prometheus."""
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
    return body["data"].get("result", [])


def prometheus_query(settings: Settings, promql: str) -> list[dict[str, Any]]:
    """Instant query: one ``{"labels": {...}, "value": float}`` per series (empty when none)."""
    return [
        {"labels": r.get("metric", {}), "value": float(r["value"][1])}
        for r in _instant_query(settings, promql)
    ]


def prometheus_samples(settings: Settings, promql: str) -> list[dict[str, Any]]:
    """Instant query of a range vector (``metric[5m]``): one ``{"labels": {...}, "values":
    [float, ...]}`` per series, its raw samples in the window, oldest first."""
    return [
        {"labels": r.get("metric", {}), "values": [float(v) for _, v in r["values"]]}
        for r in _instant_query(settings, promql)
    ]


def served_models(settings: Settings) -> pd.DataFrame:
    """``rakuten_model_info`` series: which version every scraped API instance serves."""
    rows = [
        {**r["labels"], "instance": r["labels"].get("instance", "")}
        for r in prometheus_query(settings, "rakuten_model_info")
    ]
    return pd.DataFrame(rows, columns=["instance", "name", "version", "alias"])
