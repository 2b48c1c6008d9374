"""Readiness on a fresh install, with a real MLflow server: ready without a model only when the
registry said that no production version exists; 503 while loading, for a pinned version that
cannot load, and while the registry is unreachable."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import orjson
import pytest

from rakuten_mlops.serving.model_store import ModelStore, load_pipeline
from rakuten_mlops.serving.routers.health import ready
from tests.serving.factories import REALISTIC_PRODUCTS, RegisteredModel, register_version
from tests.support import wait_http

pytestmark = pytest.mark.slow
NO_MODEL = "no production model exists yet"


def fresh_name() -> str:
    return f"rakuten_fresh_{uuid.uuid4().hex[:8]}"


def assert_no_model_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    message = response.json()["error"]
    assert NO_MODEL in message and "promote" in message
    assert response.headers["retry-after"] == "5"


def ready_now(store: ModelStore) -> tuple[int, dict]:
    response = asyncio.run(ready(store))
    return response.status_code, orjson.loads(response.body)


def test_fresh_install_is_ready_predict_says_how_then_serves_the_promoted_version(
    mlflow_server, fitted_pipelines, tmp_path, start_api
):
    model = RegisteredModel(fresh_name(), mlflow_server.uri, ("", ""))
    api = start_api(model, f"sqlite:///{tmp_path / 'data.db'}")  # waits for /ready 200
    with httpx.Client(base_url=api.url, timeout=10) as client:
        body = client.get("/ready").json()
        assert body["ready"] is True and body["model_version"] is None and NO_MODEL in body["reason"]
        assert_no_model_503(client.post("/predict", json=REALISTIC_PRODUCTS[0]))
        assert_no_model_503(client.post("/predict/batch", json={"items": REALISTIC_PRODUCTS}))
        assert client.get("/metrics").text.count("rakuten_model_loaded 0.0") == 1

        version = register_version(mlflow_server.uri, model.name, pipeline=fitted_pipelines[0])
        wait_http(f"{api.url}/ready", 30, ok=lambda r: r.json()["model_version"] == version)
        served = client.post("/predict", json=REALISTIC_PRODUCTS[0])
        assert served.status_code == 200 and served.json()["model_version"] == version


def test_fastapi_routes_answer_the_same_503(mlflow_server, settings, monkeypatch):
    from fastapi.testclient import TestClient

    from rakuten_mlops.serving import create_app

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings.mlflow_tracking_uri, settings.registered_model = mlflow_server.uri, fresh_name()
    settings.serve_fast_path = False
    with TestClient(create_app(settings, prediction_log=False)) as client:
        deadline = time.monotonic() + 20
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/ready").json()["model_version"] is None
        assert_no_model_503(client.post("/predict", json=REALISTIC_PRODUCTS[0]))
        assert_no_model_503(client.post("/predict/batch", json={"items": REALISTIC_PRODUCTS}))


def test_not_ready_while_the_promoted_version_loads(mlflow_server, fitted_pipelines, settings):
    settings.mlflow_tracking_uri, settings.registered_model = mlflow_server.uri, fresh_name()
    release = threading.Event()
    store = ModelStore(
        settings, loader=lambda uri: release.wait(30) and load_pipeline(uri), reload_signal=None
    )
    with pytest.raises(Exception, match="has no alias @production"):
        store.load()
    assert ready_now(store)[0] == 200

    version = register_version(mlflow_server.uri, settings.registered_model, pipeline=fitted_pipelines[0])
    loading = threading.Thread(target=store.load)
    loading.start()
    deadline = time.monotonic() + 20
    while store.no_production_version and time.monotonic() < deadline:
        time.sleep(0.05)
    status, body = ready_now(store)
    assert status == 503 and body["ready"] is False
    release.set()
    loading.join(30)
    assert ready_now(store) == (200, {"ready": True, "model_version": version, "reason": None})


def test_a_pinned_version_that_does_not_exist_is_not_ready(registered_model, settings):
    settings.mlflow_tracking_uri, settings.registered_model = (
        registered_model.tracking_uri,
        registered_model.name,
    )
    settings.model_version = "99"
    store = ModelStore(settings, reload_signal=None)
    with pytest.raises(Exception, match="has no version 99"):
        store.load()
    status, body = ready_now(store)
    assert status == 503 and "has no version 99" in body["reason"]


def test_a_loaded_model_predicts_once_before_it_serves(
    mlflow_server, fitted_pipelines, settings, monkeypatch, caplog
):
    """The first call of a freshly loaded pipeline is its slow one: the store makes it on a placeholder
    product before the model serves (and ``/ready`` answers 200), so no user request pays for it."""
    import rakuten_mlops.serving.model_store as model_store

    calls: list[tuple[list[str], list[str]]] = []
    fail = {"now": False}

    class Counted:
        def __init__(self, runner):
            self.runner, self.kind = runner, runner.kind

        def run(self, designations, descriptions):
            calls.append((list(designations), list(descriptions)))
            if fail["now"]:
                raise ValueError("cannot score the placeholder")
            return self.runner.run(designations, descriptions)

    real_plan = model_store.plan_for
    monkeypatch.setattr(model_store, "plan_for", lambda pipeline: Counted(real_plan(pipeline)))
    settings.mlflow_tracking_uri, settings.registered_model = mlflow_server.uri, fresh_name()
    register_version(mlflow_server.uri, settings.registered_model, pipeline=fitted_pipelines[0])
    store = ModelStore(settings, reload_signal=None)
    store.load()
    assert calls == [(["warm-up"], [""])], "one prediction before serving"
    assert ready_now(store)[0] == 200
    store.current.predict([REALISTIC_PRODUCTS[0]["designation"]], [""], 3)
    assert len(calls) == 2

    fail["now"] = True  # a model that cannot score the placeholder still loads: its requests will say
    register_version(mlflow_server.uri, settings.registered_model, pipeline=fitted_pipelines[0])
    with caplog.at_level("WARNING", logger="rakuten_mlops.serving"):
        assert store.load() is True
    assert "warm-up prediction failed" in caplog.text and len(calls) == 3
