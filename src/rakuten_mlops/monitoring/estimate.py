"""``rakuten-mlops estimate``: the production model's F1 per window, estimated before labels arrive.

Reads the prediction log of each window (the probability vector of every prediction, see
:mod:`rakuten_mlops.model.probabilities`), estimates weighted F1, macro F1 and accuracy with a
90 % interval (:mod:`.performance`), checks whether the estimate can be trusted, adds the
realized scores when labels exist for the window's predictions, and records the result (table
``performance_estimates``, an MLflow run in experiment ``rakuten_estimate``, setting ``estimate_experiment``).

Trust: the estimate assumes the probabilities are as calibrated on the window as on the test
split they were measured on. That fails when the inputs leave what the model learnt; a model
facing words it never saw can be confidently wrong. A window is flagged (``trusted: false``,
with reasons) when its mean out-of-vocabulary rate rises above the test split's by more than
``OOV_TOLERANCE``, or its mean confidence moves by more than ``CONFIDENCE_TOLERANCE``, or the
mix of predicted classes moves by more than ``CLASS_MIX_TOLERANCE`` (total variation distance:
under a shift of class priors the probabilities are no longer calibrated either), or the
version's calibration was never measured.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.settings import Settings

DEFAULT_WINDOW = "1d"

OOV_TOLERANCE = 0.05
CONFIDENCE_TOLERANCE = 0.05
CLASS_MIX_TOLERANCE = 0.25


@dataclass(frozen=True)
class Reference:
    """What the version's test split looked like: mean OOV rate, mean confidence, predicted-class
    shares, and the calibration error that widens the interval."""

    oov_rate: float
    confidence: float
    class_shares: dict[int, float] = field(default_factory=dict)
    calibration_error: float = 0.0

    @classmethod
    def from_metrics(cls, metrics: dict) -> Reference | None:
        """From the training run's metrics or the version's tags (``reference_oov_rate``, ...)."""
        try:
            shares = metrics.get("reference_class_shares") or {}
            if isinstance(shares, str):
                shares = json.loads(shares)
            return cls(
                float(metrics["reference_oov_rate"]),
                float(metrics["reference_confidence"]),
                {int(k): float(v) for k, v in shares.items()},
                float(metrics.get("ece_excess") or 0.0),
            )
        except (KeyError, TypeError, ValueError):
            return None


def class_mix_distance(predicted: np.ndarray, shares: dict[int, float]) -> float:
    """Total variation distance between the window's predicted-class shares and ``shares``."""
    codes, counts = np.unique(np.asarray(predicted), return_counts=True)
    window = dict(zip(codes.tolist(), (counts / max(counts.sum(), 1)).tolist(), strict=True))
    return 0.5 * sum(abs(window.get(c, 0.0) - shares.get(c, 0.0)) for c in set(window) | set(shares))


def trust_checks(
    oov_rate: np.ndarray,
    confidence: np.ndarray,
    reference: Reference | None,
    predicted: np.ndarray | None = None,
) -> list[dict]:
    """One entry per check: name, value, reference, tolerance, ok and a sentence."""
    if reference is None:
        return [
            {"check": "reference", "ok": False,
             "reason": "the version's test split was not measured (trained before calibration was logged)"}
        ]  # fmt: skip
    oov = float(np.nanmean(oov_rate)) if np.isfinite(oov_rate).any() else float("nan")
    conf = float(np.mean(confidence))
    checks = []
    oov_ok = not np.isfinite(oov) or oov - reference.oov_rate <= OOV_TOLERANCE
    checks.append(
        {"check": "oov_rate", "value": oov, "reference": reference.oov_rate, "tolerance": OOV_TOLERANCE,
         "ok": bool(oov_ok),
         "reason": f"mean out-of-vocabulary rate {oov:.3f} vs {reference.oov_rate:.3f} on the test split"
         + ("" if oov_ok else f" (more than +{OOV_TOLERANCE} : the model sees words it never learnt)")}
    )  # fmt: skip
    conf_ok = abs(conf - reference.confidence) <= CONFIDENCE_TOLERANCE
    checks.append(
        {"check": "confidence", "value": conf, "reference": reference.confidence,
         "tolerance": CONFIDENCE_TOLERANCE, "ok": bool(conf_ok),
         "reason": f"mean confidence {conf:.3f} vs {reference.confidence:.3f} on the test split"
         + ("" if conf_ok else f" (moved by more than {CONFIDENCE_TOLERANCE})")}
    )  # fmt: skip
    if predicted is not None and reference.class_shares:
        distance = class_mix_distance(predicted, reference.class_shares)
        mix_ok = distance <= CLASS_MIX_TOLERANCE
        checks.append(
            {"check": "class_mix", "value": distance, "reference": 0.0, "tolerance": CLASS_MIX_TOLERANCE,
             "ok": bool(mix_ok),
             "reason": f"predicted-class mix {distance:.3f} away from the test split's (total variation)"
             + ("" if mix_ok else " (class priors moved: the probabilities were calibrated on the old ones)")}
        )  # fmt: skip
    return checks


# --- the prediction log of a window --------------------------------------------------------


def window_predictions(
    settings: Settings, model_version: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """The logged predictions of ``model_version`` in [start, end] that carry probabilities."""
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction

    upgrade(settings.database_url)
    columns = ["prediction_id", "productid", "prdtypecode", "confidence", "oov_rate", "probabilities"]
    query = select(*(getattr(Prediction, c) for c in columns)).where(
        Prediction.model_version == str(model_version),
        Prediction.created_at >= start,
        Prediction.created_at <= end,
        Prediction.probabilities.is_not(None),
    )
    with engine_for(settings.database_url).connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=columns)


def realized_labels(settings: Settings, model_version: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The window's logged predictions whose true class is known: ``prediction_id``, ``predicted``
    and ``label``, one row per prediction.

    Labels come from labelled loads (a product loaded into ``products`` with the ``productid`` the
    prediction was made for) and from ``POST /feedback`` (the newest revision of the prediction's
    feedback label, :func:`rakuten_mlops.monitoring.feedback.labelled_predictions`), which wins
    when a prediction has both. Every source of labels feeds realized F1 through this function.
    """
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction, Product
    from rakuten_mlops.monitoring.feedback import labelled_predictions

    upgrade(settings.database_url)
    query = (
        select(Prediction.prediction_id, Prediction.prdtypecode, Product.prdtypecode)
        .join(Product, Product.productid == Prediction.productid)
        .where(
            Prediction.model_version == str(model_version),
            Prediction.created_at >= start,
            Prediction.created_at <= end,
        )
    )
    columns = ["prediction_id", "predicted", "label"]
    with engine_for(settings.database_url).connect() as conn:
        loads = pd.DataFrame(conn.execute(query).all(), columns=columns)
    feedback = labelled_predictions(settings.database_url, start, end, model_version)[columns]
    frame = pd.concat([df for df in (loads, feedback) if len(df)] or [loads], ignore_index=True)
    return frame.drop_duplicates("prediction_id", keep="last").reset_index(drop=True)


# --- one window ----------------------------------------------------------------------------


def estimate_window(
    predictions: pd.DataFrame, reference: Reference | None, labels: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Estimate, trust checks and (when labels exist) realized scores of one window's predictions."""
    from rakuten_mlops.data.categories import load_categories
    from rakuten_mlops.model.probabilities import decode_many, expand
    from rakuten_mlops.monitoring.performance import estimate, realized

    classes = np.asarray(sorted(load_categories()), dtype=np.int64)
    codes, probabilities = decode_many(predictions["probabilities"].tolist())
    proba = expand(codes, probabilities, classes)
    margin = reference.calibration_error if reference is not None else 0.0
    result = estimate(proba, classes, margin=margin).to_dict()
    checks = (
        trust_checks(
            pd.to_numeric(predictions["oov_rate"], errors="coerce").to_numpy(dtype=float),
            proba.max(axis=1),
            reference,
            classes[proba.argmax(axis=1)],
        )
        if len(predictions)
        else []
    )
    result["trust_checks"] = checks
    result["trusted"] = bool(len(predictions)) and all(c["ok"] for c in checks)
    result["untrusted_reasons"] = [c["reason"] for c in checks if not c["ok"]]
    if not len(predictions):
        result["untrusted_reasons"] = ["no logged prediction with probabilities in the window"]
    result["realized_f1_weighted"] = None
    result["n_labelled"] = 0
    if labels is not None and len(labels):
        scores = realized(labels["label"].to_numpy(), labels["predicted"].to_numpy())
        result.update({f"realized_{k}": v for k, v in scores.items()}, n_labelled=len(labels))
    return result


@dataclass
class EstimateRun:
    """Every window of one ``estimate`` run; ``summary`` is what ``--json`` prints."""

    summary: dict[str, Any]


def _windows(span: timedelta, count: int, end: datetime) -> list[tuple[datetime, datetime]]:
    """``count`` consecutive windows of length ``span`` ending at ``end``, oldest first."""
    return [(end - span * (i + 1), end - span * i) for i in reversed(range(count))]


def run_estimate(
    settings: Settings,
    window: str = DEFAULT_WINDOW,
    *,
    windows: int = 1,
    now: datetime | None = None,
    record: bool = True,
) -> EstimateRun:
    """Estimate the production version's performance over the last ``windows`` windows.

    The summary holds the latest window's figures at the top level and every window under
    ``windows``. Recorded (``record``) as ``performance_estimates`` rows and one MLflow run.
    Without a production model: status ``no_production_model`` and nothing recorded.
    """
    from rakuten_mlops.monitoring.drift import parse_window
    from rakuten_mlops.registry import production_lineage

    span = parse_window(window)
    end = now or datetime.now(UTC)
    mv = production_lineage(settings)
    if mv is None:
        return EstimateRun(
            {"status": "no_production_model", "window": window, "model_version": None, "n": 0,
             "f1_weighted": None, "interval": None, "trusted": False, "realized_f1_weighted": None,
             "message": f"no version of {settings.registered_model} has the alias "
             f"{settings.production_alias!r}: nothing to estimate", "windows": []}
        )  # fmt: skip
    reference = Reference.from_metrics(mv.tags)
    entries = []
    for start, stop in _windows(span, windows, end):
        predictions = window_predictions(settings, mv.version, start, stop)
        labels = realized_labels(settings, mv.version, start, stop)
        entry = estimate_window(predictions, reference, labels)
        entry.update(window=window, window_start=start.isoformat(), window_end=stop.isoformat())
        entry["status"] = "ok" if entry["n"] else "no_predictions"
        entries.append(entry)
    latest = entries[-1]
    summary = {
        **{k: v for k, v in latest.items() if k != "per_class"},
        "model_version": mv.version,
        "per_class": latest["per_class"],
        "reference": None if reference is None else {
            "oov_rate": reference.oov_rate, "confidence": reference.confidence,
            "calibration_error": reference.calibration_error,
        },
        "windows": [{k: v for k, v in e.items() if k != "per_class"} for e in entries],
        "created_at": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    summary = json.loads(json.dumps(summary, default=_plain))
    if record:
        summary["experiment"] = settings.estimate_experiment
        _log_and_record(settings, mv.version, summary, entries)
    return EstimateRun(summary)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _record(settings: Settings, version: str, entries: list[dict], run_id: str | None) -> list[int]:
    from rakuten_mlops.db import session_scope
    from rakuten_mlops.db.models import PerformanceEstimate

    ids = []
    with session_scope(settings.database_url) as session:
        for e in entries:
            row = PerformanceEstimate(
                model_version=str(version),
                window=e["window"],
                window_start=datetime.fromisoformat(e["window_start"]),
                window_end=datetime.fromisoformat(e["window_end"]),
                n=int(e["n"]),
                f1_weighted=_finite(e["f1_weighted"]),
                f1_weighted_low=_finite(e["interval"][0]),
                f1_weighted_high=_finite(e["interval"][1]),
                f1_macro=_finite(e["f1_macro"]),
                accuracy=_finite(e["accuracy"]),
                trusted=bool(e["trusted"]),
                realized_f1_weighted=_finite(e["realized_f1_weighted"]),
                n_labelled=int(e["n_labelled"]),
                summary=json.loads(json.dumps(e, default=_plain).replace("NaN", "null")),
                mlflow_run_id=run_id,
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def _log_and_record(settings: Settings, version: str, summary: dict[str, Any], entries: list[dict]) -> None:
    """Log the MLflow run, then commit the rows naming it, then end the run.

    The rows are the commit point: a job killed before them leaves only a run still marked
    running (no reader takes it for an estimate); a run is marked finished only once its rows exist.
    """
    import mlflow

    from rakuten_mlops.registry import connect, heartbeat, registry_errors
    from rakuten_mlops.training.tracking import ensure_experiment

    connect(settings)
    # MLflow writes "View run ... at: URL" to stdout when a run ends: keep stdout for --json
    with registry_errors(settings), contextlib.redirect_stdout(sys.stderr):
        experiment_id = ensure_experiment(settings, settings.estimate_experiment)
        with (
            mlflow.start_run(
                experiment_id=experiment_id, run_name=f"estimate-v{summary['model_version']}"
            ) as run,
            heartbeat(settings, run.info.run_id),
        ):
            summary["mlflow_run_id"] = run.info.run_id
            mlflow.set_tags({"model_version": summary["model_version"], "trusted": str(summary["trusted"])})
            mlflow.log_params({"window": summary["window"], "windows": len(entries)})
            for step, e in enumerate(entries):
                values = {
                    "n": e["n"], "f1_weighted": e["f1_weighted"], "f1_weighted_low": e["interval"][0],
                    "f1_weighted_high": e["interval"][1], "f1_macro": e["f1_macro"], "accuracy": e["accuracy"],
                    "trusted": float(e["trusted"]), "realized_f1_weighted": e["realized_f1_weighted"],
                }  # fmt: skip
                mlflow.log_metrics(
                    {k: float(v) for k, v in values.items() if _finite(v) is not None}, step=step
                )
            mlflow.log_dict(summary, "estimate/summary.json")
            summary["estimate_ids"] = _record(settings, version, entries, run.info.run_id)


def latest_estimate(settings: Settings, model_version: str):
    """The newest ``performance_estimates`` row of a model version, or None."""
    from sqlalchemy import select

    from rakuten_mlops.db import session_scope, upgrade
    from rakuten_mlops.db.models import PerformanceEstimate

    upgrade(settings.database_url)
    query = (
        select(PerformanceEstimate)
        .where(PerformanceEstimate.model_version == str(model_version))
        .order_by(PerformanceEstimate.id.desc())
        .limit(1)
    )
    with session_scope(settings.database_url) as session:
        row = session.scalars(query).first()
        if row is not None:
            session.expunge(row)
        return row
