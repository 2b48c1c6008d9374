"""Recording of model events (training decisions, promotions, rollbacks, rollouts)."""

from __future__ import annotations

from typing import Any

from rakuten_mlops.db.engine import session_scope
from rakuten_mlops.db.models import ModelEvent


def record_model_event(
    url: str,
    event_type: str,
    model_name: str,
    *,
    version: str | None = None,
    previous_version: str | None = None,
    decision: str | None = None,
    candidate_f1: float | None = None,
    production_f1: float | None = None,
    reason: str = "",
    actor: str = "system",
    details: dict[str, Any] | None = None,
) -> int:
    """Append one row to ``model_events`` and return its id."""
    with session_scope(url) as session:
        row = ModelEvent(
            event_type=event_type,
            model_name=model_name,
            version=version,
            previous_version=previous_version,
            decision=decision,
            candidate_f1=candidate_f1,
            production_f1=production_f1,
            reason=reason,
            actor=actor,
            details=details,
        )
        session.add(row)
        session.flush()
        return row.id
