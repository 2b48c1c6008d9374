"""``POST /predict`` and ``POST /predict/batch``."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response

from rakuten_mlops.serving.deps import Service
from rakuten_mlops.serving.schemas import BatchIn, BatchOut, PredictionOut, ProductIn

router = APIRouter(tags=["predictions"])

TopK = Annotated[int, Query(ge=1, le=27, description="How many classes to return in top_k.")]
JSON = "application/json"
ERRORS = {
    400: {"description": "Invalid JSON or non-UTF-8 body"},
    413: {"description": "Body over 1 MB"},
    422: {"description": "Invalid field (the body names it)"},
    503: {"description": "No model loaded yet"},
}


@router.post("/predict", response_model=PredictionOut, responses=ERRORS)
async def predict(product: ProductIn, service: Service, k: TopK = 3) -> Response:
    """Classify one product: predicted prdtypecode, category name, confidence and the top k classes."""
    _, results = await service.predict([product], k)
    return Response(orjson.dumps(results[0]), media_type=JSON)


@router.post("/predict/batch", response_model=BatchOut, responses=ERRORS)
async def predict_batch(batch: BatchIn, service: Service, k: TopK = 3) -> Response:
    """Classify up to 1,000 products; the predictions come back in input order, all from one model version."""
    version, results = await service.predict(batch.items, k)
    return Response(orjson.dumps({"predictions": results, "model_version": version}), media_type=JSON)
