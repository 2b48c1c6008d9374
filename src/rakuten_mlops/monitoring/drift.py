"""``rakuten-mlops drift``: does what the API sees still look like what the production model was
trained on?

Reference: the production model's lineage rows (see :mod:`.reference`). Current: the prediction
log of the window. Every test is an Evidently ``ValueDrift`` (see :mod:`.stattests`); the
overall severity counts the features with at least one drifted test. Results: an Evidently HTML
report and a JSON summary under ``$RAKUTEN_HOME/reports/drift/<timestamp>/``, the same files as
artifacts of an MLflow run in experiment ``rakuten_drift``, and a ``drift_reports`` row, whose
``summary`` the API turns into ``rakuten_drift_score{feature,test}`` and ``rakuten_drift_severity``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.monitoring import SEVERITY_LEVEL
from rakuten_mlops.monitoring.stattests import CATEGORICAL, NUMERICAL, TESTS, DriftTest, register_stattests
from rakuten_mlops.settings import Settings

_WINDOW_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(text: str) -> timedelta:
    """``7d``, ``24h``, ``30m``, ``90s``, ``2w`` -> timedelta."""
    match = _WINDOW_RE.match(text or "")
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"window {text!r} is not like 7d, 24h, 30m or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass
class TestResult:
    feature: str
    test: str
    score: float
    threshold: float
    drifted: bool
    kind: str  # p_value | distance
    reference: float | None = None
    current: float | None = None
    detail: str = ""


@dataclass
class Comparison:
    """The outcome of comparing a reference frame with a current frame."""

    status: str  # ok | not_enough_data | not_enough_reference
    severity: str
    message: str
    tests: list[TestResult] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    n_reference: int = 0
    n_current: int = 0
    snapshot: Any = None

    @property
    def drifted_features(self) -> list[str]:
        return list(dict.fromkeys(t.feature for t in self.tests if t.drifted))


def severity_for(drifted_features: int, settings: Settings) -> str:
    if drifted_features >= settings.drift_high_features:
        return "high"
    if drifted_features >= settings.drift_medium_features:
        return "medium"
    return "low" if drifted_features else "none"


def _threshold(test: DriftTest, settings: Settings) -> float:
    return settings.drift_psi_threshold if test.method == "psi" else settings.drift_p_value


def _describe(
    test: DriftTest, reference: pd.Series, current: pd.Series
) -> tuple[float | None, float | None, str]:
    """Plain numbers a person can compare: means, shares, or the class whose share moved most."""
    if test.feature == "predicted_class":
        ref_share = reference.value_counts(normalize=True)
        cur_share = current.value_counts(normalize=True)
        change = cur_share.sub(ref_share, fill_value=0.0)
        top = change.abs().idxmax()
        return (
            float(ref_share.get(top, 0.0)),
            float(cur_share.get(top, 0.0)),
            f"largest change: class {int(top)} share {ref_share.get(top, 0.0):.1%} -> {cur_share.get(top, 0.0):.1%}",
        )
    ref_mean, cur_mean = float(reference.astype(float).mean()), float(current.astype(float).mean())
    label = "share" if test.feature == "description_empty" else "mean"
    return ref_mean, cur_mean, f"{label} {ref_mean:.4g} -> {cur_mean:.4g}"


def compare(reference: pd.DataFrame, current: pd.DataFrame, settings: Settings) -> Comparison:
    """Run every applicable test on the two monitoring frames (NaN = not measured for that row).

    Windows with fewer than ``drift_min_current_rows`` predictions are not tested at all:
    severity ``none``, status ``not_enough_data``.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    minimum = settings.drift_min_current_rows
    n_ref, n_cur = len(reference), len(current)
    if n_cur < minimum:
        return Comparison(
            "not_enough_data", "none",
            f"not enough data: {n_cur:,} predictions in the window, at least {minimum:,} are needed",
            n_reference=n_ref, n_current=n_cur,
        )  # fmt: skip
    if n_ref < minimum:
        return Comparison(
            "not_enough_reference", "none",
            f"not enough reference data: {n_ref:,} lineage rows, at least {minimum:,} are needed",
            n_reference=n_ref, n_current=n_cur,
        )  # fmt: skip
    register_stattests()
    runnable, skipped = [], []
    for test in TESTS:
        have_ref, have_cur = (
            int(reference[test.column].notna().sum()),
            int(current[test.column].notna().sum()),
        )
        if min(have_ref, have_cur) < minimum:
            skipped.append(
                {"feature": test.feature, "test": test.method,
                 "reason": f"{have_ref} reference / {have_cur} current rows measured, {minimum} needed"}
            )  # fmt: skip
        else:
            runnable.append(test)
    metrics = [
        ValueDrift(column=t.column, method=t.method, threshold=_threshold(t, settings)) for t in runnable
    ]
    used = {t.column for t in runnable}  # columns no test reads (all NaN) stay out of the report
    definition = DataDefinition(
        numerical_columns=[c for c in NUMERICAL if c in used],
        categorical_columns=[c for c in CATEGORICAL if c in used],
    )
    columns = [c for c in NUMERICAL + CATEGORICAL if c in used]
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    results = _read_snapshot(snapshot.dict(), runnable, reference, current)
    comparison = Comparison("ok", "none", "", results, skipped, n_ref, n_cur, snapshot)
    drifted = comparison.drifted_features
    comparison.severity = severity_for(len(drifted), settings)
    comparison.message = f"{len(drifted)} of {len({t.feature for t in runnable})} features drifted" + (
        f": {', '.join(drifted)}" if drifted else ""
    )
    return comparison


def _read_snapshot(data: dict, runnable: list[DriftTest], reference, current) -> list[TestResult]:
    """Evidently's verdicts: a ValueDrift test with status FAIL means drift was detected."""
    metrics = {m["id"]: m for m in data["metrics"]}
    by_key = {(t.column, t.method): t for t in runnable}
    results = []
    for test in data["tests"]:
        metric = metrics[test["metric_config"]["metric_id"]]
        config = metric["config"]
        spec = by_key[(config["column"], config["method"])]
        ref_value, cur_value, detail = _describe(
            spec, reference[spec.column].dropna(), current[spec.column].dropna()
        )
        results.append(
            TestResult(
                feature=spec.feature,
                test=spec.method,
                score=float(metric["value"]),
                threshold=float(config["threshold"]),
                drifted=test["status"] == "FAIL",
                kind=spec.kind,
                reference=ref_value,
                current=cur_value,
                detail=detail,
            )
        )
    return results


@dataclass
class DriftCheck:
    """Everything one ``drift`` run produced: the JSON summary and where the files went."""

    summary: dict[str, Any]
    report_dir: Path | None = None

    @property
    def severity(self) -> str:
        return self.summary["severity"]


@dataclass
class CurrentWindow:
    """The prediction log of a window as the tests read it, and how many predictions it stands for."""

    frame: pd.DataFrame  # one uniform sample of the window (see uniform_sample)
    logged_rows: int  # rows of the window in the log
    estimated_predictions: int  # predictions served in the window: each row counts 1 / sample_rate
    sample_rate: float  # the sampling rate of ``frame``


def uniform_sample(rates: np.ndarray, seed: int = 0) -> np.ndarray:
    """Which rows to keep so that rows logged at different sampling rates form one uniform sample.

    Under one rate the logged rows are a uniform sample of the traffic: every distribution the
    tests compare is unbiased as it is, and the tests see the real number of rows. When the
    rate changed inside the window, the periods with the higher rate are over-represented:
    keeping each row with probability ``lowest rate / its rate`` gives every prediction the
    same chance ``lowest rate`` of being tested (weighting instead would overstate how many
    rows the tests rest on, and Evidently's tests take no weights).
    """
    rates = np.asarray(rates, dtype="float64")
    if len(rates) == 0 or rates.min() == rates.max():
        return np.ones(len(rates), dtype=bool)
    return np.random.default_rng(seed).random(len(rates)) < rates.min() / rates


def current_window(settings: Settings, start: datetime, end: datetime, model_version: str) -> CurrentWindow:
    """The prediction log of [start, end]; model columns only for the production version's rows."""
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction
    from rakuten_mlops.monitoring.reference import normalise
    from rakuten_mlops.monitoring.stattests import MODEL_COLUMNS

    upgrade(settings.database_url)
    columns = [
        "model_version",
        "prdtypecode",
        "confidence",
        "text_length",
        "word_count",
        "description_empty",
        "oov_rate",
        "sample_rate",
    ]
    query = select(*(getattr(Prediction, c) for c in columns)).where(
        Prediction.created_at >= start, Prediction.created_at <= end
    )
    with engine_for(settings.database_url).connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(), columns=columns)
    rates = frame["sample_rate"].to_numpy(dtype="float64")
    logged, estimated = len(frame), int(round(float((1.0 / rates).sum()))) if len(frame) else 0
    frame = frame[uniform_sample(rates)]
    other_model = (frame["model_version"].astype(str) != str(model_version)).to_numpy()
    frame = normalise(frame)
    frame.loc[other_model, MODEL_COLUMNS] = np.nan
    return CurrentWindow(frame, logged, estimated, float(rates.min()) if len(rates) else 1.0)


def current_frame(settings: Settings, start: datetime, end: datetime, model_version: str) -> pd.DataFrame:
    """The rows of :func:`current_window` the tests compare."""
    return current_window(settings, start, end, model_version).frame


def _report_dir(settings: Settings, now: datetime) -> tuple[Path, Path]:
    """(staging folder, final folder) of a new report: the files are written in the staging
    folder (hidden, named after this process) and appear under the final name in one rename."""
    import os

    base = settings.reports_dir / "drift"
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    folder, n = base / stamp, 1
    while folder.exists():
        folder, n = base / f"{stamp}-{n}", n + 1
    staging = base / f".{folder.name}.{os.getpid()}.partial"
    staging.mkdir(parents=True)
    return staging, folder


def run_drift_check(
    settings: Settings, window: str | None = None, *, now: datetime | None = None
) -> DriftCheck:
    """Compare the window's prediction log with the production model's training data and record it.

    Without a production model there is nothing to compare with: a summary with status
    ``no_production_model`` is returned and nothing is recorded.
    """
    from rakuten_mlops.monitoring.reference import load_production_model, reference_frame

    window = window or settings.drift_window
    span = parse_window(window)
    end = now or datetime.now(UTC)
    start = end - span
    model = load_production_model(settings)
    base = {"window": window, "window_start": start.isoformat(), "window_end": end.isoformat()}
    if model is None:
        summary = {
            **base, "status": "no_production_model", "severity": "none", "drifted": False, "tests": [],
            "message": f"no version of {settings.registered_model} has the alias {settings.production_alias!r}: "
            "nothing to compare with (train and promote a model first)",
        }  # fmt: skip
        return DriftCheck(summary)
    reference = reference_frame(settings, model)
    window_rows = current_window(settings, start, end, model.version)
    current = window_rows.frame
    comparison = compare(reference, current, settings)
    summary = {
        **base,
        "status": comparison.status,
        "severity": comparison.severity,
        "severity_level": SEVERITY_LEVEL[comparison.severity],
        "drifted": comparison.severity != "none",
        "drifted_features": comparison.drifted_features,
        "message": comparison.message,
        "model_version": model.version,
        "reference_batch_ids": model.batch_ids,
        "n_reference": comparison.n_reference,
        "n_reference_model": int(reference["confidence"].notna().sum()),
        "n_current": comparison.n_current,
        "n_current_model": int(current["confidence"].notna().sum()),
        "n_current_logged": window_rows.logged_rows,
        "n_current_estimated": window_rows.estimated_predictions,
        "current_sample_rate": window_rows.sample_rate,
        "tests": [asdict(t) for t in comparison.tests],
        "skipped": comparison.skipped,
        "thresholds": {
            "p_value": settings.drift_p_value,
            "psi": settings.drift_psi_threshold,
            "min_current_rows": settings.drift_min_current_rows,
            "medium_features": settings.drift_medium_features,
            "high_features": settings.drift_high_features,
        },
        "created_at": datetime.now(UTC).isoformat(),
    }
    staging, folder = _report_dir(settings, end)
    summary["json_path"] = str(folder / "summary.json")
    summary["html_path"] = str(folder / "report.html") if comparison.snapshot is not None else None
    try:
        if comparison.snapshot is not None:
            comparison.snapshot.save_html(str(staging / "report.html"))
        _log_and_record(settings, summary, staging, folder, start, end)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a failed check leaves no folder behind
        raise
    return DriftCheck(summary, folder)


def _log_and_record(
    settings: Settings, summary: dict[str, Any], staging: Path, folder: Path, start: datetime, end: datetime
) -> None:
    """The MLflow run (artifacts from the staging folder), the folder renamed into place, then the
    ``drift_reports`` row, then the run's end.

    The row is the commit point: a check killed before it leaves a run still marked running and
    a staging or unrecorded folder, which no reader takes for a report (``rakuten-mlops doctor``
    lists them); the row never names files that are not all in place, and a run is marked
    finished only once its row exists.
    """
    import mlflow

    from rakuten_mlops.registry import connect, heartbeat, registry_errors
    from rakuten_mlops.training.tracking import ensure_experiment

    connect(settings)
    # MLflow writes "View run ... at: URL" to stdout when a run ends: keep stdout for --json
    with registry_errors(settings), contextlib.redirect_stdout(sys.stderr):
        experiment_id = ensure_experiment(settings, settings.drift_experiment)
        with (
            mlflow.start_run(experiment_id=experiment_id, run_name=f"drift-{folder.name}") as run,
            heartbeat(settings, run.info.run_id),
        ):
            summary["mlflow_run_id"] = run.info.run_id
            mlflow.set_tags(
                {
                    "model_version": summary["model_version"],
                    "severity": summary["severity"],
                    "status": summary["status"],
                }
            )
            mlflow.log_params(
                {k: summary[k] for k in ("window", "model_version", "n_reference", "n_current")}
                | {"reference_batch_ids": ",".join(map(str, summary["reference_batch_ids"]))}
            )
            mlflow.log_metrics(
                {
                    "severity_level": summary["severity_level"],
                    "drifted_features": len(summary["drifted_features"]),
                }
                | {f"{t['feature']}_{t['test']}": t["score"] for t in summary["tests"]}
            )
            (staging / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            mlflow.log_artifacts(str(staging), artifact_path="drift_report")
            staging.rename(folder)
            try:
                summary["report_id"] = _record(settings, summary, start, end)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise


def _record(settings: Settings, summary: dict[str, Any], start: datetime, end: datetime) -> int:
    from rakuten_mlops.db import session_scope
    from rakuten_mlops.db.models import DriftReport

    with session_scope(settings.database_url) as session:
        row = DriftReport(
            model_version=summary["model_version"],
            window_start=start,
            window_end=end,
            n_reference=summary["n_reference"],
            n_current=summary["n_current"],
            severity=summary["severity"],
            drifted=summary["drifted"],
            summary=json.loads(json.dumps(summary, default=str)),
            html_path=summary["html_path"],
            mlflow_run_id=summary["mlflow_run_id"],
        )
        session.add(row)
        session.flush()
        return row.id


def latest_report(settings: Settings, model_version: str | None = None):
    """The newest ``drift_reports`` row (of one model version when given), or None."""
    from sqlalchemy import select

    from rakuten_mlops.db import session_scope, upgrade
    from rakuten_mlops.db.models import DriftReport

    upgrade(settings.database_url)
    query = select(DriftReport).order_by(DriftReport.id.desc()).limit(1)
    if model_version is not None:
        query = query.where(DriftReport.model_version == str(model_version))
    with session_scope(settings.database_url) as session:
        return session.scalars(query).first()
