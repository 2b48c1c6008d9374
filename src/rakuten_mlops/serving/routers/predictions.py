"""``POST /predict`` and ``POST /predict/batch`` as FastAPI routes: the documented interface.

At run time ``fastpath.PredictionEndpoints`` answers these two paths before FastAPI's
middleware and routing (a third of the cost of a request); these routes define the OpenAPI
schema and serve the requests when ``RAKUTEN_SERVE_FAST_PATH=false``. Both call the same
``PredictionService`` and the same error mapping.
"""

# No `from __future__ import annotations`: FastAPI must see the request models built at run time.
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Response

from rakuten_mlops.serving.deps import Service
from rakuten_mlops.serving.errors import BODY_ERRORS, error_responses
from rakuten_mlops.serving.schemas import (
    EXPLAIN_TOP_DEFAULT,
    EXPLAIN_TOP_MAX,
    TOP_K_MAX,
    BatchIn,
    BatchOut,
    PredictionOut,
    ProductIn,
)

TopK = Annotated[int, Query(ge=1, le=TOP_K_MAX, description="How many classes to return in top_k.")]
Explain = Annotated[
    bool,
    Query(
        description="Add an explanation to each prediction: the n-grams that pushed the predicted "
        "class most and the strongest evidence for the runner-up class, each with its exact "
        "contribution (TF-IDF value x coefficient) to the class score."
    ),
]
ExplainTop = Annotated[
    int, Query(ge=1, le=EXPLAIN_TOP_MAX, description="How many n-grams an explanation lists per class.")
]
JSON = "application/json"


def prediction_query(
    k: TopK = 3, explain: Explain = False, explain_top: ExplainTop = EXPLAIN_TOP_DEFAULT
) -> tuple[int, int]:
    """``k`` and the n-grams an explanation lists per class (0: no explanation asked)."""
    return k, explain_top if explain else 0


PredictionQuery = Annotated[tuple[int, int], Depends(prediction_query)]


def build_router(
    product_model: type[ProductIn], batch_model: type[BatchIn], max_body_bytes: int
) -> APIRouter:
    """The prediction routes for request models carrying the configured limits."""
    router = APIRouter(tags=["predictions"])
    errors = error_responses(
        {
            **BODY_ERRORS,
            413: f"Body over {max_body_bytes:,} bytes",
            409: "explain=true but the served model cannot be explained",
            503: "No model loaded yet (Retry-After)",
        }
    )

    @router.post("/predict", response_model=PredictionOut, responses=errors)
    async def predict(product: product_model, service: Service, query: PredictionQuery) -> Response:  # type: ignore[valid-type]
        """Classify one product: predicted prdtypecode, category name, confidence and the top k classes."""
        _, results = await service.predict([product], *query)
        return Response(orjson.dumps(results[0]), media_type=JSON)

    @router.post("/predict/batch", response_model=BatchOut, responses=errors)
    async def predict_batch(batch: batch_model, service: Service, query: PredictionQuery) -> Response:  # type: ignore[valid-type]
        """Classify a batch of products (RAKUTEN_MAX_BATCH_ITEMS, default 1,000); input order, one model version."""
        version, results = await service.predict(batch.items, *query)
        return Response(orjson.dumps({"predictions": results, "model_version": version}), media_type=JSON)

    return router
