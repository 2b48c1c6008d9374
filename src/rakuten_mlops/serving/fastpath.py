"""``POST /predict`` and ``POST /predict/batch`` answered in plain ASGI, in front of FastAPI.

FastAPI's middleware stack, routing and dependency solving cost about as much per request as
the model itself (docs/serving.md has the profile). The two prediction paths carry nearly all
the traffic, so they are answered here: the same body checks as ``BodyGuard``, the same pydantic request models
(validated straight from the JSON bytes), the same ``PredictionService`` and the same error
mapping (``errors.py``) as the FastAPI routes in ``routers/predictions.py``, which stay the
documented interface (OpenAPI) and serve these paths when ``RAKUTEN_SERVE_FAST_PATH=false``.
Every other path goes to FastAPI unchanged.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

import orjson
from pydantic import Field, TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from rakuten_mlops.errors import PlatformError
from rakuten_mlops.serving.errors import domain_error, error_body, unexpected_error, validation_error
from rakuten_mlops.serving.middleware import BodyRejected, ClientGone, read_body, reply
from rakuten_mlops.serving.predictor import PredictionService
from rakuten_mlops.serving.schemas import EXPLAIN_TOP_DEFAULT, EXPLAIN_TOP_MAX, TOP_K_MAX, BatchIn, ProductIn

# the query parameters of the routes, in their declaration order (FastAPI reports errors in it)
_QUERY = {
    "k": (TypeAdapter(Annotated[int, Field(ge=1, le=TOP_K_MAX)]), 3),
    "explain": (TypeAdapter(bool), False),
    "explain_top": (TypeAdapter(Annotated[int, Field(ge=1, le=EXPLAIN_TOP_MAX)]), EXPLAIN_TOP_DEFAULT),
}
_JSON_HEADERS = [(b"content-type", b"application/json")]


class PredictionEndpoints:
    """ASGI app: the two prediction paths here, everything else to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        service: PredictionService,
        product_model: type[ProductIn],
        batch_model: type[BatchIn],
        max_body_bytes: int,
    ):
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.single = TypeAdapter(product_model)
        self.batch = TypeAdapter(batch_model)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path == "/predict":
                await self._answer(scope, receive, send, batch=False)
                return
            if path == "/predict/batch":
                await self._answer(scope, receive, send, batch=True)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, *, batch: bool) -> None:
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
            k, explain = self._query(scope["query_string"])
            if not body:  # FastAPI's answer to a missing body, for the same request
                raise ValidationError.from_exception_data(
                    "body", [{"type": "missing", "loc": (), "input": None}]
                )
            if batch:
                products = self.batch.validate_json(body).items
                version, results = await self.service.predict(products, k, explain)
                content = orjson.dumps({"predictions": results, "model_version": version})
            else:
                _, results = await self.service.predict([self.single.validate_json(body)], k, explain)
                content = orjson.dumps(results[0])
        except ValidationError as exc:
            status, error = validation_error(exc.errors(include_url=False))
            await reply(send, status, error)
            return
        except BodyRejected as exc:
            await reply(send, exc.status, error_body(exc.message, exc.field))
            return
        except ClientGone:
            return
        except PlatformError as exc:
            status, error, headers = domain_error(exc)
            await reply(send, status, error, headers)
            return
        except Exception as exc:
            status, error = unexpected_error(exc)
            await reply(send, status, error)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})

    @staticmethod
    def _query(query_string: bytes) -> tuple[int, int]:
        """``k`` (3 when absent) and the features to list per class of an explanation (0 without
        ``explain``) from the query string; the last of a repeated parameter wins, as in FastAPI."""
        if not query_string:
            return 3, 0
        raw: dict[str, str] = {}
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
            if name in _QUERY:
                raw[name] = value
        values, errors = {}, []
        for name, (adapter, default) in _QUERY.items():
            if name not in raw:
                values[name] = default
                continue
            try:
                values[name] = adapter.validate_python(raw[name])
            except ValidationError as exc:
                errors += [
                    {"type": e["type"], "loc": (name,), "input": raw[name], "ctx": e.get("ctx") or {}}
                    for e in exc.errors(include_url=False)
                ]
        if errors:
            raise ValidationError.from_exception_data("query", errors)
        return values["k"], values["explain_top"] if values["explain"] else 0
