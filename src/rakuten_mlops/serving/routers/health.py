"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from rakuten_mlops.serving.deps import Store
from rakuten_mlops.serving.responses import OrjsonResponse
from rakuten_mlops.serving.schemas import ReadyOut

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers (a model need not be loaded)."""
    return {"status": "ok"}


@router.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def ready(store: Store) -> OrjsonResponse:
    """Readiness: 200 once a model is loaded, and on a fresh install whose registry has no production
    version yet (``model_version`` null, ``/predict`` answers 503 until one is promoted); 503 while a
    model is loading, when a pinned version cannot be loaded, or when the registry is unreachable."""
    model = store.current
    if model is None and store.no_production_version:
        return OrjsonResponse(ReadyOut(ready=True, reason=store.no_production_reason()).model_dump())
    if model is None:
        body = ReadyOut(ready=False, reason=store.last_error or "the model is still loading")
        return OrjsonResponse(body.model_dump(), status_code=503)
    return OrjsonResponse(ReadyOut(ready=True, model_version=model.version).model_dump())
