"""What the control room's pages read and do, one module per page of ``ui/views``.

Plain functions over the platform's own code: reads go to the data database (SQLAlchemy), the
MLflow registry (through :mod:`rakuten_mlops.registry`) and the API (HTTP); actions call the same
functions as the CLI, or the API's admin routes. No page shells out to docker or kubectl. They
return pandas frames or small dataclasses, so tests can check them without Streamlit.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from rakuten_mlops.settings import Settings


class ActionRefused(RuntimeError):
    """An action cannot run as asked (no admin token, missing reason, nothing to load...)."""


def fetch_rows(settings: Settings, statement) -> list[dict[str, Any]]:
    from rakuten_mlops.db import engine_for, upgrade

    upgrade(settings.database_url)
    with engine_for(settings.database_url).connect() as conn:
        return [dict(r) for r in conn.execute(statement).mappings()]


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
    frame = pd.DataFrame(
        fetch_rows(settings, statement), columns=[c.name for c in statement.selected_columns]
    )
    frame["details"] = [json.dumps(d, default=str) if d else "" for d in frame["details"]]
    return frame
