"""The API over real HTTP: `rakuten-mlops serve` on loopback, a real MLflow server, a real Postgres."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import httpx
import pytest

from rakuten_mlops.data.categories import load_categories
from tests.serving.factories import ADMIN_TOKEN, REALISTIC_PRODUCTS, prediction_rows, wait_rows
from tests.support import wait_http

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_classifies_products_and_logs_every_prediction(registered_model, pg_url, start_api):
    api = start_api(registered_model, pg_url)
    codes = load_categories()
    with httpx.Client(base_url=api.url, timeout=10) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json()["model_version"] == registered_model.versions[0]
        singles = []
        for product in REALISTIC_PRODUCTS:
            response = client.post("/predict", json=product, params={"k": 5})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["prdtypecode"] in codes
            assert body["category"] == codes[body["prdtypecode"]].name_fr
            assert body["model_version"] == registered_model.versions[0]
            assert len(body["top_k"]) == 5
            probabilities = [c["probability"] for c in body["top_k"]]
            assert probabilities == sorted(probabilities, reverse=True)
            assert body["confidence"] == probabilities[0]
            singles.append(body)
        batch = client.post("/predict/batch", json={"items": REALISTIC_PRODUCTS}).json()
        assert [p["prdtypecode"] for p in batch["predictions"]] == [s["prdtypecode"] for s in singles]
        assert {p["model_version"] for p in batch["predictions"]} == {batch["model_version"]}
        model = client.get("/model").json()
        assert model["version"] == registered_model.versions[0]
        assert model["alias"] == "production"
        assert model["registry_reachable"] is True
        assert model["scores"] == {"f1_weighted": 0.8}
        assert model["n_classes"] == 27

    n = 2 * len(REALISTIC_PRODUCTS)
    rows = wait_rows(pg_url, n, timeout=5)  # flushed within ~1 s
    assert len(rows) == n
    by_id = {r.prediction_id: r for r in rows}
    first = by_id[singles[0]["prediction_id"]]
    assert first.prdtypecode == singles[0]["prdtypecode"]
    assert first.model_version == registered_model.versions[0]
    assert first.word_count > 0 and first.text_length > 0 and 0.0 <= first.oov_rate <= 1.0
    assert by_id[singles[3]["prediction_id"]].productid == 4252011632
    assert by_id[singles[1]["prediction_id"]].description_empty is True
    # one id per product: the batch's UUID version 7 and the row number
    ids = [p["prediction_id"] for p in batch["predictions"]]
    assert [i.split("-")[1] for i in ids] == [f"{n:03x}" for n in range(len(ids))]
    assert {uuid.UUID(i.split("-")[0]).version for i in ids} == {7}


BAD_INPUTS = [
    pytest.param({"json": {}}, 422, "designation", id="missing-designation"),
    pytest.param({"json": {"designation": ""}}, 422, "designation", id="empty-designation"),
    pytest.param({"json": {"designation": "   "}}, 422, "designation", id="blank-designation"),
    pytest.param({"json": {"designation": 42}}, 422, "designation", id="designation-not-a-string"),
    pytest.param({"json": {"designation": "ok", "productid": "abc"}}, 422, "productid", id="productid-not-int"),
    pytest.param({"json": {"designation": "x" * 10_001}}, 422, "designation", id="designation-too-long"),
    pytest.param({"json": {"designation": "ok", "description": "y" * 10_001}}, 422, "description", id="desc-long"),
    pytest.param({"json": ["designation"]}, 422, "body", id="not-an-object"),
    pytest.param(
        {"content": b'{"designation": "x' + b"a" * 1_100_000 + b'"}', "headers": {"content-type": "application/json"}},
        413, "body", id="body-over-1MB",
    ),
    pytest.param(
        {"content": b'{"designation": "caf\xe9"}', "headers": {"content-type": "application/json"}},
        400, "body", id="not-utf8",
    ),
    pytest.param(
        {"content": b'{"designation": ', "headers": {"content-type": "application/json"}}, 400, "body",
        id="invalid-json",
    ),
    pytest.param(
        {"content": b"designation=x", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        415, "content-type", id="form-encoded",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("request_kwargs", "status", "field"), BAD_INPUTS)
def test_bad_input_gets_4xx_naming_the_field(shared_api, request_kwargs, status, field):
    response = httpx.post(f"{shared_api.url}/predict", timeout=10, **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field


def test_batch_limits(shared_api):
    item = {"designation": "Lampe de chevet"}
    too_many = httpx.post(f"{shared_api.url}/predict/batch", json={"items": [item] * 1001}, timeout=10)
    assert too_many.status_code == 422 and too_many.json()["field"] == "items"
    nested = httpx.post(
        f"{shared_api.url}/predict/batch", json={"items": [item, {"designation": ""}]}, timeout=10
    )
    assert nested.status_code == 422 and nested.json()["field"] == "items[1].designation"
    full = httpx.post(f"{shared_api.url}/predict/batch", json={"items": [item] * 1000}, timeout=30)
    assert full.status_code == 200 and len(full.json()["predictions"]) == 1000


def test_admin_routes_are_off_without_token(shared_api):
    response = httpx.post(f"{shared_api.url}/admin/reload", timeout=10)
    assert response.status_code == 404
    assert "/admin/reload" not in httpx.get(f"{shared_api.url}/openapi.json").json()["paths"]


def test_prediction_log_is_flushed_on_sigterm(registered_model, pg_url, start_api):
    api = start_api(
        registered_model,
        pg_url,
        RAKUTEN_PREDICTION_LOG_FLUSH_SECONDS=600,
        RAKUTEN_PREDICTION_LOG_FLUSH_ROWS=100_000,
    )
    with httpx.Client(base_url=api.url, timeout=10) as client:
        for product in REALISTIC_PRODUCTS:
            assert client.post("/predict", json=product).status_code == 200
        assert client.post("/predict/batch", json={"items": REALISTIC_PRODUCTS * 10}).status_code == 200
    expected = len(REALISTIC_PRODUCTS) * 11
    time.sleep(1.5)
    assert len(prediction_rows(pg_url)) < expected  # nothing forced a flush yet
    assert api.terminate() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a graceful stop
    assert "Application shutdown complete" in api.log()
    assert len(prediction_rows(pg_url)) == expected


def test_hot_swap_under_load_fails_no_request_and_mixes_no_versions(registered_model, pg_url, start_api):
    api = start_api(registered_model, pg_url, RAKUTEN_MODEL_POLL_SECONDS=0.3)
    v1, v2 = registered_model.versions
    seen: dict[int, list[str]] = {}
    failures: list[str] = []
    stop = threading.Event()
    swapped_at: list[float] = []

    def hammer(worker: int) -> None:
        versions = seen.setdefault(worker, [])
        with httpx.Client(base_url=api.url, timeout=10) as client:
            while not stop.is_set():
                try:
                    if worker == 0:
                        response = client.post("/predict/batch", json={"items": REALISTIC_PRODUCTS * 5})
                        body = response.json()
                        batch_versions = {p["model_version"] for p in body["predictions"]}
                        if batch_versions != {body["model_version"]}:
                            failures.append(f"mixed batch {batch_versions}")
                        versions.append(body["model_version"])
                    else:
                        product = REALISTIC_PRODUCTS[worker % len(REALISTIC_PRODUCTS)]
                        response = client.post("/predict", json=product)
                        versions.append(response.json()["model_version"])
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                except Exception as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        registered_model.move_alias(v2)
        swapped_at.append(time.monotonic())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(v and v[-1] == v2 for v in seen.values()):
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert failures == []
    for worker, versions in seen.items():
        assert set(versions) == {v1, v2}, f"client {worker} saw {set(versions)}"
        switch = versions.index(v2)
        assert set(versions[:switch]) == {v1} and set(versions[switch:]) == {v2}, f"client {worker} went back"
    assert httpx.get(f"{api.url}/model").json()["version"] == v2
    metrics = httpx.get(f"{api.url}/metrics").text
    assert 'rakuten_model_reloads_total{result="success"} 2.0' in metrics
    assert (
        f'rakuten_model_info{{alias="production",name="{registered_model.name}",version="{v2}"}} 1.0'
        in metrics
    )


def test_registry_outage_keeps_serving_and_is_reported(registered_model, mlflow_server, tmp_path, start_api):
    api = start_api(registered_model, f"sqlite:///{tmp_path / 'data.db'}", RAKUTEN_MODEL_POLL_SECONDS=0.5)
    product = REALISTIC_PRODUCTS[0]
    with httpx.Client(base_url=api.url, timeout=15) as client:
        before = client.post("/predict", json=product).json()
        mlflow_server.stop()
        try:
            model = wait_http(
                f"{api.url}/model",
                20,
                ok=lambda r: r.status_code == 200 and r.json()["registry_reachable"] is False,
            ).json()
            assert model["version"] == registered_model.versions[0]
            assert model["last_error"]
            for _ in range(20):
                during = client.post("/predict", json=product)
                assert during.status_code == 200
                assert during.json()["prdtypecode"] == before["prdtypecode"]
            assert client.get("/ready").status_code == 200
            reload = client.post("/admin/reload", headers=ADMIN)
            assert reload.status_code == 503 and "unreachable" in reload.json()["error"]
        finally:
            mlflow_server.start()
        wait_http(f"{api.url}/model", 20, ok=lambda r: r.json()["registry_reachable"] is True)


def test_admin_reload_rollback_and_token(registered_model, tmp_path, start_api):
    api = start_api(registered_model, f"sqlite:///{tmp_path / 'data.db'}", RAKUTEN_MODEL_POLL_SECONDS=0)
    v1, v2 = registered_model.versions
    with httpx.Client(base_url=api.url, timeout=30) as client:
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
        registered_model.move_alias(v2)
        assert client.get("/model").json()["version"] == v1  # the poll is off: nothing moves by itself
        reload = client.post("/admin/reload", headers=ADMIN).json()
        assert reload == {"changed": True, "model_version": v2, "previous_version": v1}
        assert client.post("/predict", json=REALISTIC_PRODUCTS[0]).json()["model_version"] == v2
        pytest.importorskip("rakuten_mlops.training.registry", reason="rollback needs the training package")
        rollback = client.post("/admin/rollback", headers=ADMIN, json={"to": v1, "reason": "test"})
        assert rollback.status_code == 200, rollback.text
        assert rollback.json()["model_version"] == v1
        assert client.post("/predict", json=REALISTIC_PRODUCTS[0]).json()["model_version"] == v1


def test_admin_retrain_runs_training_in_the_background(registered_model, tmp_path, start_api):
    api = start_api(registered_model, f"sqlite:///{tmp_path / 'data.db'}", RAKUTEN_MODEL_POLL_SECONDS=0)
    with httpx.Client(base_url=api.url, timeout=30, headers=ADMIN) as client:
        started = client.post("/admin/retrain")
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["mode"] == "local" and job["status"] == "running"
        assert client.post("/admin/retrain").status_code == 409  # one retraining at a time
        deadline = time.monotonic() + 120
        while job["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
            job = client.get(job["status_url"]).json()
        assert job["status"] == ("succeeded" if job["exit_code"] == 0 else "failed")
        assert job["log_tail"]  # what `rakuten-mlops train --promote` printed (empty database here)
        assert job["finished_at"] is not None
        assert client.get("/admin/retrain/nope").status_code == 404
