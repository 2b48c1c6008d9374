"""``POST /predict`` and ``POST /predict/batch`` as FastAPI routes: the documented interface.

At run time ``fastpath.PredictionEndpoints`` answers these two paths before FastAPI's
middleware and routing (a third of the cost of a request); these routes define the OpenAPI
schema and serve the requests when ``RAKUTEN_SERVE_FAST_PATH=false``. Both call the same
``PredictionService`` and the same error mapping.
"""

# No `from __future__ import annotations`: FastAPI must see the request models built at run time.
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response

from rakuten_mlops.serving.deps import Service
from rakuten_mlops.serving.schemas import TOP_K_MAX, BatchIn, BatchOut, PredictionOut, ProductIn

TopK = Annotated[int, Query(ge=1, le=TOP_K_MAX, description="How many classes to return in top_k.")]
JSON = "application/json"


def build_router(
    product_model: type[ProductIn], batch_model: type[BatchIn], max_body_bytes: int
) -> APIRouter:
    """The prediction routes for request models carrying the configured limits."""
    router = APIRouter(tags=["predictions"])
    errors = {
        400: {"description": "Invalid JSON or non-UTF-8 body"},
        413: {"description": f"Body over {max_body_bytes:,} bytes"},
        415: {"description": "Content-Type is not application/json"},
        422: {"description": "Invalid field (the body names it)"},
        503: {"description": "No model loaded yet"},
    }

    @router.post("/predict", response_model=PredictionOut, responses=errors)
    async def predict(product: product_model, service: Service, k: TopK = 3) -> Response:  # type: ignore[valid-type]
        """Classify one product: predicted prdtypecode, category name, confidence and the top k classes."""
        _, results = await service.predict([product], k)
        return Response(orjson.dumps(results[0]), media_type=JSON)

    @router.post("/predict/batch", response_model=BatchOut, responses=errors)
    async def predict_batch(batch: batch_model, service: Service, k: TopK = 3) -> Response:  # type: ignore[valid-type]
        """Classify a batch of products (RAKUTEN_MAX_BATCH_ITEMS, default 1,000); input order, one model version."""
        version, results = await service.predict(batch.items, k)
        return Response(orjson.dumps({"predictions": results, "model_version": version}), media_type=JSON)

    return router
