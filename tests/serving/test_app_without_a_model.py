"""The app while the registry is unreachable (in-process, no server): alive, not ready, /predict 503
with Retry-After, admin routes off without a token, unknown routes a JSON 404."""

from __future__ import annotations

import time

from tests.support import free_port


def test_app_without_a_model_is_alive_but_not_ready(settings, monkeypatch):
    from fastapi.testclient import TestClient

    from rakuten_mlops.serving import create_app

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings.mlflow_tracking_uri = f"http://127.0.0.1:{free_port()}"  # nothing listens: registry down
    with TestClient(create_app(settings, prediction_log=False)) as client:
        assert client.get("/health").status_code == 200
        deadline = time.monotonic() + 10
        while (
            client.get("/ready").json()["reason"] == "the model is still loading"
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        ready = client.get("/ready")  # an unreachable registry is not "no production version yet"
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "unreachable" in ready.json()["reason"]
        predict = client.post("/predict", json={"designation": "Livre"})
        assert predict.status_code == 503 and predict.headers["retry-after"] == "5"
        assert client.post("/admin/reload").status_code == 404  # no token configured: admin is off
        assert client.get("/nope").json() == {"error": "Not Found"}
