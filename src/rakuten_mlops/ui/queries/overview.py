"""Overview page: the newest load batch (the production model and drift come from their pages)."""

from __future__ import annotations

from typing import Any

from rakuten_mlops.settings import Settings
from rakuten_mlops.ui.queries import fetch_rows


def latest_load(settings: Settings) -> dict[str, Any] | None:
    from sqlalchemy import select

    from rakuten_mlops.db.models import LoadBatch

    rows = fetch_rows(settings, select(LoadBatch.__table__).order_by(LoadBatch.id.desc()).limit(1))
    return rows[0] if rows else None
