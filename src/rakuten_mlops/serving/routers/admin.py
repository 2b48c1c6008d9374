"""Admin actions behind the bearer token ``RAKUTEN_ADMIN_TOKEN`` (absent token: routes not mounted)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from rakuten_mlops.serving.deps import Admin, State
from rakuten_mlops.serving.errors import BODY_ERRORS, error_responses
from rakuten_mlops.serving.schemas import ReloadIn, ReloadOut, RetrainOut, RollbackIn, RollbackOut
from rakuten_mlops.training.registry import rollback as registry_rollback

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Admin],
    responses=error_responses({401: "Missing or wrong admin bearer token"}),
)
REGISTRY_ERRORS = {
    404: "The registry has no such version (or none to go back to)",
    503: "The MLflow registry cannot be reached (Retry-After)",
}


@router.post(
    "/reload", response_model=ReloadOut, responses=error_responses({**BODY_ERRORS, **REGISTRY_ERRORS})
)
async def reload(state: State, body: ReloadIn | None = None) -> ReloadOut:
    """Ask the registry now which version to serve and swap it in; the other workers follow within ~1 s."""
    previous = state.store.current
    changed = await asyncio.to_thread(state.store.reload_all_workers, force=bool(body and body.force))
    current = state.store.current
    return ReloadOut(
        changed=changed,
        model_version=current.version if current else None,
        previous_version=previous.version if previous else None,
    )


@router.post(
    "/rollback",
    response_model=RollbackOut,
    responses=error_responses(
        {
            **BODY_ERRORS,
            **REGISTRY_ERRORS,
            409: "Refused: the version is already in production, or production moved",
        }
    ),
)
async def rollback(state: State, body: RollbackIn | None = None) -> RollbackOut:
    """Move the production alias back (to ``to`` or the previous version) and serve it at once
    (the other workers follow within ~1 s)."""
    body = body or RollbackIn()
    previous = state.store.current
    result = await asyncio.to_thread(
        registry_rollback,
        state.settings,
        to=body.to,
        reason=body.reason or "rollback from the API",
        actor="api",
    )
    if state.store.pinned_version is None:
        await asyncio.to_thread(state.store.reload_all_workers)
    current = state.store.current
    return RollbackOut(
        production_version=result.to_version,
        previous_version=previous.version if previous else None,
        model_version=current.version if current else None,
    )


@router.post(
    "/retrain",
    response_model=RetrainOut,
    status_code=202,
    responses=error_responses(
        {
            413: BODY_ERRORS[413],
            415: BODY_ERRORS[415],
            409: "A retraining started earlier is still running",
            502: "The Argo server refused the workflow or cannot be reached",
        }
    ),
)
async def retrain(state: State, request: Request) -> dict[str, Any]:
    """Start a retraining: a local background process, or the ``rakuten-train`` Argo workflow."""
    info = await asyncio.to_thread(state.retrainer.start)
    return {**info, "status_url": str(request.url_for("retrain_status", job_id=info["id"]).path)}


@router.get(
    "/retrain/{job_id}",
    response_model=RetrainOut,
    name="retrain_status",
    responses=error_responses(
        {
            404: "No retraining job of that id",
            422: BODY_ERRORS[422],
            502: "The Argo server cannot be reached",
        }
    ),
)
async def retrain_status(job_id: str, state: State, request: Request) -> dict[str, Any]:
    """Status of a retraining started by ``POST /admin/retrain``."""
    try:
        info = await asyncio.to_thread(state.retrainer.status, job_id)
    except KeyError:
        raise HTTPException(404, f"no retraining job {job_id!r}") from None
    return {**info, "status_url": request.url.path}
