"""Domain errors of the API and their HTTP mapping: the one place where an error becomes a status code.

Every error body is JSON with ``error`` (one sentence) and, for bad input, ``field`` naming the
offending field and ``detail`` listing every problem found.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rakuten_mlops.errors import (
    ModelNotFoundError,
    PlatformError,
    PromotionRefused,
    RegistryUnavailableError,
)
from rakuten_mlops.serving.responses import OrjsonResponse

log = logging.getLogger("rakuten_mlops.serving")


class ModelNotReadyError(PlatformError):
    """No model is loaded yet (startup, or the registry has no production version)."""


class RetrainAlreadyRunning(PlatformError):
    """A retraining job started by this API is still running."""


class RetrainSubmissionError(PlatformError):
    """The Argo server refused or could not be reached for a retraining workflow."""


class FeatureUnavailable(PlatformError):
    """An optional part of the platform (training package) is not installed in this image."""


STATUS_OF: list[tuple[type[Exception], int]] = [
    (ModelNotReadyError, 503),
    (RegistryUnavailableError, 503),
    (ModelNotFoundError, 404),
    (PromotionRefused, 409),
    (RetrainAlreadyRunning, 409),
    (RetrainSubmissionError, 502),
    (FeatureUnavailable, 501),
    (PlatformError, 400),
]


def error_body(message: str, field: str | None = None, detail: list | None = None) -> dict:
    body: dict = {"error": message}
    if field is not None:
        body["field"] = field
    if detail is not None:
        body["detail"] = detail
    return body


def field_name(loc: tuple | list) -> str:
    """``("body", "items", 3, "designation")`` -> ``items[3].designation``."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _validation_response(exc: RequestValidationError) -> OrjsonResponse:
    problems = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        problems.append(
            {"field": field_name(loc), "message": err.get("msg", ""), "type": err.get("type", "")}
        )
    if any(p["type"] == "json_invalid" for p in problems):
        first = next(p for p in problems if p["type"] == "json_invalid")
        return OrjsonResponse(
            error_body(f"request body is not valid JSON: {first['message']}", "body", problems),
            status_code=400,
        )
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    return OrjsonResponse(
        error_body(f"{first['field']}: {first['message']}", first["field"], problems), status_code=422
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map validation errors, HTTP errors and domain errors to JSON responses."""

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        field = "body" if exc.status_code in (400, 413) else None
        return OrjsonResponse(error_body(message, field), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(PlatformError)
    async def _on_domain(_: Request, exc: PlatformError) -> OrjsonResponse:
        status = next(code for kind, code in STATUS_OF if isinstance(exc, kind))
        headers = {"Retry-After": "5"} if status == 503 else None
        return OrjsonResponse(error_body(str(exc)), status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def _on_unexpected(_: Request, exc: Exception) -> OrjsonResponse:
        log.exception("unexpected error")
        return OrjsonResponse(error_body(f"internal error ({exc.__class__.__name__})"), status_code=500)
