"""``GET /metrics`` in the Prometheus text format."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from rakuten_mlops.serving.deps import State
from rakuten_mlops.serving.metrics import render

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: State) -> Response:
    """Prometheus metrics of every worker (names in docs/serving.md)."""
    if state.prediction_log is not None:
        state.metrics.log_queue_depth.set(state.prediction_log.depth)
    body, content_type = await asyncio.to_thread(render, state.registry)
    return Response(body, media_type=content_type)
