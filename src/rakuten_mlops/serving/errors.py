"""Domain errors of the API and their HTTP mapping: the one place where an error becomes a status code.

FastAPI's exception handlers and the prediction fast path (``fastpath.py``) both call the
functions below, so an error has the same status and body whichever way a request came.

Every error body is JSON with ``error`` (one sentence) and, for bad input, ``field`` naming the
offending field and ``detail`` listing every problem found.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rakuten_mlops.db.engine import DatabaseError
from rakuten_mlops.errors import (
    ModelNotFoundError,
    PlatformError,
    PromotionRefused,
    RegistryUnavailableError,
    RetrainAlreadyRunning,
    UnknownPredictionError,
)
from rakuten_mlops.serving.responses import OrjsonResponse
from rakuten_mlops.serving.schemas import NO_NUL, NOT_BLANK, ErrorOut

log = logging.getLogger("rakuten_mlops.serving")


class ModelNotReadyError(PlatformError):
    """No model is loaded yet (startup, or the registry has no production version)."""


class ExplanationUnavailable(PlatformError):
    """The served model is not one whose predictions can be explained feature by feature."""


class RetrainSubmissionError(PlatformError):
    """The Argo server refused or could not be reached for a retraining workflow."""


class OverloadedError(PlatformError):
    """This worker holds as many prediction requests as it may (``admission.py``): retry shortly."""

    retry_after = 1  # a worker frees its slots within a batch or two; clients back off from here


STATUS_OF: list[tuple[type[Exception], int]] = [
    (OverloadedError, 503),
    (ModelNotReadyError, 503),
    (RegistryUnavailableError, 503),
    (DatabaseError, 503),
    (UnknownPredictionError, 404),
    (ModelNotFoundError, 404),
    (PromotionRefused, 409),
    (RetrainAlreadyRunning, 409),
    (ExplanationUnavailable, 409),
    (RetrainSubmissionError, 502),
    (PlatformError, 400),
]


# What each error status means, for the ``responses`` of the routes (their OpenAPI entries).
BODY_ERRORS = {
    400: "Invalid JSON, a body that is not UTF-8, or a bad Content-Length",
    413: "Body larger than RAKUTEN_MAX_BODY_BYTES",
    415: "Content-Type is not JSON",
    422: "Invalid field (the body names it)",
}


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict]:
    """FastAPI ``responses`` for these statuses, each with the error body's schema (``ErrorOut``)."""
    return {status: {"model": ErrorOut, "description": text} for status, text in sorted(descriptions.items())}


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


# A refused ``pattern`` of the request models says what the pattern means, not its regex.
PATTERN_MESSAGES = {
    NOT_BLANK: "must not be empty or blank (it needs a character that is not whitespace)",
    NO_NUL: "must not contain the NUL character (U+0000)",
}


def validation_error(errors: list[dict]) -> tuple[int, dict]:
    """Status and body for pydantic/FastAPI validation errors: 400 for bad JSON, 422 otherwise."""
    problems = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        kind = err.get("type", "")
        message = err.get("msg", "")
        if kind == "string_pattern_mismatch":
            message = PATTERN_MESSAGES.get((err.get("ctx") or {}).get("pattern"), message)
        problems.append({"field": field_name(loc), "message": message, "type": kind})
    invalid_json = next((p for p in problems if p["type"] == "json_invalid"), None)
    if invalid_json is not None:
        return 400, error_body(f"request body is not valid JSON: {invalid_json['message']}", "body", problems)
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    return 422, error_body(f"{first['field']}: {first['message']}", first["field"], problems)


def domain_error(exc: PlatformError) -> tuple[int, dict, dict[str, str] | None]:
    """Status, body and headers for a platform error (503s say when to retry: ``retry_after``
    seconds of the error, else 5)."""
    status = next(code for kind, code in STATUS_OF if isinstance(exc, kind))
    headers = {"Retry-After": str(getattr(exc, "retry_after", 5))} if status == 503 else None
    body = error_body(str(exc), getattr(exc, "field", None), getattr(exc, "detail", None))
    return status, body, headers


def unexpected_error(exc: Exception) -> tuple[int, dict]:
    log.error("unexpected error", exc_info=exc)
    return 500, error_body(f"internal error ({exc.__class__.__name__})")


def install_error_handlers(app: FastAPI) -> None:
    """Map validation errors, HTTP errors and domain errors to JSON responses."""

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        status, body = validation_error(list(exc.errors()))
        return OrjsonResponse(body, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        field = "body" if exc.status_code in (400, 413) else None
        return OrjsonResponse(error_body(message, field), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(PlatformError)
    async def _on_domain(_: Request, exc: PlatformError) -> OrjsonResponse:
        status, body, headers = domain_error(exc)
        return OrjsonResponse(body, status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def _on_unexpected(_: Request, exc: Exception) -> OrjsonResponse:
        status, body = unexpected_error(exc)
        return OrjsonResponse(body, status_code=status)
