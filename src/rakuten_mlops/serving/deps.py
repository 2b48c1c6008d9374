"""FastAPI dependencies, defined once as ``Annotated`` aliases.

All are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
hand-off on every request for what is an attribute lookup."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rakuten_mlops.serving.model_store import ModelStore
from rakuten_mlops.serving.prediction_log import PredictionLog
from rakuten_mlops.serving.predictor import PredictionService
from rakuten_mlops.settings import Settings


@dataclass
class ServingState:
    """Everything the routes need, built once by ``create_app``."""

    settings: Settings
    store: ModelStore
    service: PredictionService
    prediction_log: PredictionLog | None
    metrics: Any
    registry: Any
    retrainer: Any = None


async def get_state(request: Request) -> ServingState:
    return request.app.state.serving


async def get_store(request: Request) -> ModelStore:
    return request.app.state.serving.store


async def get_service(request: Request) -> PredictionService:
    return request.app.state.serving.service


_bearer = HTTPBearer(auto_error=False, description="RAKUTEN_ADMIN_TOKEN")


async def require_admin(
    state: Annotated[ServingState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Bearer token check of the admin routes (constant-time comparison)."""
    expected = state.settings.admin_token
    given = credentials.credentials if credentials else ""
    if expected is None or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(
            401, "missing or wrong admin bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


_feedback_bearer = HTTPBearer(auto_error=False, description="RAKUTEN_FEEDBACK_TOKEN (or RAKUTEN_ADMIN_TOKEN)")


async def require_feedback(
    state: Annotated[ServingState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_feedback_bearer)],
) -> None:
    """Bearer token check of ``POST /feedback``: the feedback token or the admin token."""
    given = (credentials.credentials if credentials else "").encode()
    accepted = False
    for token in (state.settings.feedback_token, state.settings.admin_token):
        if token is not None:  # both compared, constant time each
            accepted |= hmac.compare_digest(given, token.get_secret_value().encode())
    if not accepted:
        raise HTTPException(
            401, "missing or wrong feedback bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


State = Annotated[ServingState, Depends(get_state)]
Store = Annotated[ModelStore, Depends(get_store)]
Service = Annotated[PredictionService, Depends(get_service)]
Admin = Depends(require_admin)
Feedback = Depends(require_feedback)
