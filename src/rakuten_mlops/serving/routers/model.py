"""``GET /model``: what is served and whether the registry answers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter

from rakuten_mlops.serving.deps import Store
from rakuten_mlops.serving.schemas import ModelOut

router = APIRouter(tags=["model"])

PROBE_AFTER_SECONDS = 10.0


@router.get("/model", response_model=ModelOut)
async def model_info(store: Store) -> ModelOut:
    """Name, version, alias, run id, scores, load time, and whether the MLflow registry is reachable."""
    stale = (
        store.last_check is None
        or (datetime.now(UTC) - store.last_check).total_seconds() > PROBE_AFTER_SECONDS
    )
    if stale:  # the poll is off or slow: probe the registry now
        await asyncio.to_thread(store.check_registry)
    model = store.current
    return ModelOut(
        loaded=model is not None,
        name=store.name,
        version=model.version if model else None,
        alias=model.alias if model else None,
        pinned_version=store.pinned_version,
        run_id=model.run_id if model else None,
        scores=model.scores if model else {},
        loaded_at=model.loaded_at if model else None,
        registry_reachable=store.registry_reachable,
        registry_checked_at=store.last_check,
        last_error=store.last_error,
        n_classes=int(model.classes.size) if model else 0,
        poll_seconds=store.settings.model_poll_seconds,
    )
