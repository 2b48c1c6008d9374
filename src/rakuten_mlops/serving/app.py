"""The app factory: ``create_app(settings)`` wires the model store, the prediction log and the routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp

from rakuten_mlops import __version__
from rakuten_mlops.serving.admission import Admission, AdmissionControl, serve_in_this_worker
from rakuten_mlops.serving.deps import ServingState
from rakuten_mlops.serving.errors import install_error_handlers
from rakuten_mlops.serving.fastpath import PredictionEndpoints
from rakuten_mlops.serving.metrics import api_metrics, build_registry, mark_process_dead
from rakuten_mlops.serving.middleware import BodyGuard, RequestMetrics
from rakuten_mlops.serving.model_store import ModelStore
from rakuten_mlops.serving.prediction_log import PredictionLog
from rakuten_mlops.serving.predictor import PredictionService
from rakuten_mlops.serving.responses import OrjsonResponse
from rakuten_mlops.serving.retrain import make_retrainer
from rakuten_mlops.serving.routers import admin, feedback, health, metrics, model, predictions
from rakuten_mlops.serving.schemas import request_models
from rakuten_mlops.serving.shadow import ShadowScorer
from rakuten_mlops.settings import Settings, get_settings

log = logging.getLogger("rakuten_mlops.serving")

DESCRIPTION = """Classifies Rakuten France products (French title + description) into one of 27
product type codes. Serves the `production` model of the MLflow registry and swaps versions
without downtime. Metrics at `/metrics`, prediction log in the `predictions` table."""


def create_app(settings: Settings | None = None, *, prediction_log: bool = True) -> FastAPI:
    """The prediction API for ``settings`` (default: the environment's)."""
    settings = settings or get_settings()
    metrics_ = api_metrics()
    store = ModelStore(settings, on_swap=metrics_.record_swap, on_reload=metrics_.record_reload)
    plog = (
        PredictionLog(
            settings.database_url,
            max_queue=settings.prediction_log_queue_size,
            flush_rows=settings.prediction_log_flush_rows,
            flush_seconds=settings.prediction_log_flush_seconds,
            sample_rate=settings.prediction_log_sample,
            metrics=metrics_,
        )
        if prediction_log
        else None
    )
    state = ServingState(
        settings=settings,
        store=store,
        service=PredictionService(store, plog, metrics_),
        prediction_log=plog,
        metrics=metrics_,
        registry=build_registry(settings.database_url),
    )

    state.service.shadow = shadow = ShadowScorer.for_store(store, metrics_)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if plog is not None:
            plog.start()
        loader = asyncio.create_task(store.run_background(), name="model-store")
        shadowing = asyncio.create_task(shadow.run(), name="shadow") if shadow is not None else None
        try:
            yield
        finally:
            loader.cancel()  # a registry call in a thread cannot be interrupted: do not wait for it long
            if shadowing is not None:
                shadowing.cancel()
            await asyncio.wait([loader] if shadowing is None else [loader, shadowing], timeout=2)
            if plog is not None:
                await asyncio.to_thread(plog.close)
                log.info("prediction log closed: %d written, %d dropped", plog.written, plog.dropped)
            metrics_.model_loaded.set(0)
            mark_process_dead()

    product_model, batch_model = request_models(settings.max_text_chars, settings.max_batch_items)
    app = ServingApp(
        title="Rakuten product classification API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
    )
    app.state.serving = state
    install_error_handlers(app)
    app.include_router(predictions.build_router(product_model, batch_model, settings.max_body_bytes))
    for router in (health.router, model.router, metrics.router):
        app.include_router(router)
    if settings.admin_token is not None:
        state.retrainer = make_retrainer_lazily(settings)
        app.include_router(admin.router)
    if settings.admin_token is not None or settings.feedback_token is not None:
        app.include_router(feedback.router)
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes)

    known = frozenset(app.openapi()["paths"]) | {"/docs", "/openapi.json"}
    admission = (
        Admission(settings.max_inflight, settings.max_inflight_batches, metrics_)
        if settings.max_inflight or settings.max_inflight_batches
        else None
    )
    app.state.admission = admission

    def outer_layers(fastapi_stack: ASGIApp) -> ASGIApp:
        inner = fastapi_stack
        if settings.serve_fast_path:
            inner = PredictionEndpoints(
                inner, state.service, product_model, batch_model, settings.max_body_bytes
            )
        if admission is not None:
            inner = AdmissionControl(inner, admission)
        return RequestMetrics(inner, metrics=metrics_, known_paths=known, version_of=served_version)

    def served_version() -> str | None:
        model = store.current
        return model.version if model is not None else None

    app.outer_layers = outer_layers
    return app


class ServingApp(FastAPI):
    """FastAPI with layers outside its own middleware stack: request metrics, admission control,
    then the fast path.

    ``outer_layers`` wraps what FastAPI builds, so every request is counted and timed (FastAPI
    routes and fast path alike), prediction requests beyond the in-flight limits are refused
    before any work, and the prediction paths skip FastAPI's per-request machinery.
    """

    outer_layers = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return self.outer_layers(stack) if self.outer_layers is not None else stack


def make_retrainer_lazily(settings: Settings):
    """The retrainer of the configured mode; a misconfigured Kubernetes mode fails at request time."""
    try:
        return make_retrainer(settings)
    except Exception as exc:
        return _Unavailable(exc)


class _Unavailable:
    def __init__(self, exc: Exception):
        self.exc = exc

    def start(self):
        raise self.exc

    def status(self, job_id: str):
        raise self.exc


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (what ``rakuten-mlops serve`` runs in each worker); its
    in-flight limits are the ones the worker's HTTP protocol checks (``protocol.py``)."""
    logging.basicConfig(
        level=os.environ.get("RAKUTEN_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(get_settings())
    serve_in_this_worker(app.state.admission)
    return app
