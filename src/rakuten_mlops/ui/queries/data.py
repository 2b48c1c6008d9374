"""Data page: loaded share, rows per class, load batches; load the next batch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rakuten_mlops.data.categories import category_name
from rakuten_mlops.settings import Settings
from rakuten_mlops.ui.queries import ActionRefused, fetch_rows


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


def default_source(settings: Settings) -> str:
    """The source of the newest successful load: the usual place to take the next batch from."""
    from sqlalchemy import select

    from rakuten_mlops.db.models import LoadBatch

    rows = fetch_rows(
        settings,
        select(LoadBatch.source)
        .where(LoadBatch.status == "succeeded")
        .order_by(LoadBatch.id.desc())
        .limit(1),
    )
    return rows[0]["source"] if rows else ""


def load_next_batch(settings: Settings, source: str, batch_fraction: float, initial_fraction: float = 0.4):
    """Add the next slice of ``source`` to ``products`` (same loader and audit as ``data load``)."""
    from rakuten_mlops.data.loader import LoadPlan
    from rakuten_mlops.data.loader import load_next_batch as load

    if not source.strip():
        raise ActionRefused("give the folder of the source CSV files to load from")
    plan = LoadPlan(initial_fraction=initial_fraction, batch_fraction=batch_fraction)
    return load(settings, Path(source.strip()), plan)
