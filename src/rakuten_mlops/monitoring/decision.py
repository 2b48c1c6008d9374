"""``rakuten-mlops decide``: retrain or not, with every reason and the numbers behind it.

Triggers: no production model yet; live weighted F1 of the production model on its latest
labels (a labelled batch, or feedback labels evaluated by ``evaluate-feedback``: the newer) <
``RAKUTEN_RETRAIN_F1``; the latest estimated weighted F1 (``rakuten-mlops estimate``, no labels
needed) < ``RAKUTEN_RETRAIN_F1``, only when that estimate is trusted (an untrusted one is shown
with its reasons and neither triggers nor vetoes: the drift check sees the same shift of the
inputs); labelled rows loaded since its training data >=
``RAKUTEN_RETRAIN_BACKLOG``; severity of its latest drift report >= high. The decision is
written as JSON (Argo reads ``$.retrain`` from it) and recorded as a ``retrain_decision``
model event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rakuten_mlops.settings import Settings

RETRAIN_SEVERITY = "high"


@dataclass
class Decision:
    retrain: bool
    reasons: list[str]
    checks: dict[str, Any] = field(default_factory=dict)
    production_version: str | None = None
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    event_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "retrain": self.retrain,
            "reasons": self.reasons,
            "production_version": self.production_version,
            "checks": self.checks,
            "decided_at": self.decided_at,
            "event_id": self.event_id,
        }


def _live_f1_check(settings: Settings, version: str) -> tuple[dict[str, Any], str | None]:
    from rakuten_mlops.monitoring.feedback import latest_realized_f1

    row = latest_realized_f1(settings, version)
    check: dict[str, Any] = {"threshold": settings.retrain_f1, "value": None, "triggered": False}
    if row is None:
        check["note"] = f"no labelled batch evaluated with version {version} yet, nor feedback labels"
        return check, None
    check.update(value=round(row.f1_weighted, 6), n_rows=row.n_rows, source=row.source)
    if row.source == "labelled_batch":
        check["batch_id"] = row.batch_id
    else:
        check.update(window_start=str(row.window_start), window_end=str(row.window_end))
    if row.f1_weighted < settings.retrain_f1:
        check["triggered"] = True
        return check, (
            f"live weighted F1 {row.f1_weighted:.4f} of version {version} on {row.describe()} "
            f"({row.n_rows:,} rows) is below RAKUTEN_RETRAIN_F1={settings.retrain_f1:.2f}"
        )
    return check, None


def _estimated_f1_check(settings: Settings, version: str) -> tuple[dict[str, Any], str | None]:
    from rakuten_mlops.monitoring.estimate import latest_estimate

    row = latest_estimate(settings, version)
    check: dict[str, Any] = {"threshold": settings.retrain_f1, "value": None, "triggered": False}
    if row is None or row.f1_weighted is None:
        check["note"] = f"no performance estimate of version {version} yet (rakuten-mlops estimate)"
        return check, None
    interval = [row.f1_weighted_low, row.f1_weighted_high]
    window = f"{row.window} window {row.window_start:%Y-%m-%d %H:%M} .. {row.window_end:%Y-%m-%d %H:%M}"
    check.update(value=round(row.f1_weighted, 6), interval=interval, window=window, n=row.n,
                 trusted=row.trusted, estimate_id=row.id)  # fmt: skip
    if not row.trusted:
        reasons = (row.summary or {}).get("untrusted_reasons", [])
        check["note"] = "estimate not trusted: " + "; ".join(reasons)
        return check, None
    if row.f1_weighted < settings.retrain_f1:
        check["triggered"] = True
        return check, (
            f"estimated weighted F1 {row.f1_weighted:.4f} (90% interval {interval[0]:.4f}-{interval[1]:.4f}) "
            f"of version {version} over the {window} ({row.n:,} predictions, no labels needed) "
            f"is below RAKUTEN_RETRAIN_F1={settings.retrain_f1:.2f}"
        )
    return check, None


def _backlog_check(
    settings: Settings, version: str, batch_ids: list[int]
) -> tuple[dict[str, Any], str | None]:
    from rakuten_mlops.data.status import backlog_since

    backlog = backlog_since(settings, batch_ids)
    check = {
        "value": backlog,
        "threshold": settings.retrain_backlog,
        "triggered": backlog >= settings.retrain_backlog,
    }
    if check["triggered"]:
        return check, (
            f"{backlog:,} labelled rows loaded since the training data of version {version} "
            f">= RAKUTEN_RETRAIN_BACKLOG={settings.retrain_backlog:,}"
        )
    return check, None


def _drift_check(settings: Settings, version: str) -> tuple[dict[str, Any], str | None]:
    from rakuten_mlops.monitoring.drift import SEVERITY_LEVEL, latest_report

    report = latest_report(settings, version)
    check: dict[str, Any] = {"value": None, "threshold": RETRAIN_SEVERITY, "triggered": False}
    if report is None:
        check["note"] = f"no drift report for version {version} yet"
        return check, None
    features = (report.summary or {}).get("drifted_features", [])
    check.update(value=report.severity, report_id=report.id, created_at=str(report.created_at),
                 drifted_features=features, n_current=report.n_current)  # fmt: skip
    if SEVERITY_LEVEL.get(report.severity, 0) >= SEVERITY_LEVEL[RETRAIN_SEVERITY]:
        check["triggered"] = True
        return check, (
            f"drift severity {report.severity} in report {report.id} of version {version} "
            f"({len(features)} drifted features: {', '.join(features)}; {report.n_current:,} predictions)"
        )
    return check, None


def decide(settings: Settings, *, actor: str = "cli") -> Decision:
    """Evaluate every trigger, record the decision in ``model_events`` and return it."""
    from rakuten_mlops.registry import production_lineage

    mv = production_lineage(settings)
    if mv is None:
        from rakuten_mlops.data.status import backlog_since

        backlog = backlog_since(settings, [])
        decision = Decision(
            True,
            [f"no production model yet ({backlog:,} labelled rows loaded): train one"],
            {"production_model": {"value": None, "triggered": True}, "backlog": {"value": backlog}},
        )
    else:
        version, batch_ids = mv.version, mv.batch_ids
        checks, reasons = {}, []
        for name, (check, reason) in (
            ("live_f1", _live_f1_check(settings, version)),
            ("estimated_f1", _estimated_f1_check(settings, version)),
            ("backlog", _backlog_check(settings, version, batch_ids)),
            ("drift", _drift_check(settings, version)),
        ):
            checks[name] = check
            if reason:
                reasons.append(reason)
        decision = Decision(bool(reasons), reasons, checks, version)
    decision.event_id = _record(settings, decision, actor)
    return decision


def _record(settings: Settings, decision: Decision, actor: str) -> int:
    from rakuten_mlops.db import record_model_event, upgrade

    upgrade(settings.database_url)
    live = decision.checks.get("live_f1", {})
    return record_model_event(
        settings.database_url,
        "retrain_decision",
        settings.registered_model,
        version=decision.production_version,
        decision="retrain" if decision.retrain else "keep",
        production_f1=live.get("value"),
        reason="; ".join(decision.reasons) or "no trigger fired",
        actor=actor,
        details={"checks": decision.checks, "decided_at": decision.decided_at},
    )


def describe(decision: Decision) -> list[str]:
    """Lines for people: the verdict, then every check with its numbers."""
    lines = [f"decision: {'RETRAIN' if decision.retrain else 'keep the production model'}"
             + (f" (production version {decision.production_version})" if decision.production_version else "")]  # fmt: skip
    lines += [f"  reason: {reason}" for reason in decision.reasons]
    for name, check in decision.checks.items():
        if name == "production_model":
            continue
        value = check.get("value")
        shown = "n/a" if value is None else (f"{value:,}" if isinstance(value, int) else str(value))
        state = "TRIGGERED" if check.get("triggered") else "ok"
        note = f" ({check['note']})" if check.get("note") else ""
        lines.append(f"  check {name}: {shown} vs threshold {check.get('threshold')} -> {state}{note}")
    return lines
