"""The prediction fast path answers exactly as the FastAPI routes it stands in for.

Two real API processes over HTTP, same model, same configured limits: one with the fast path
(the default), one with ``RAKUTEN_SERVE_FAST_PATH=false`` (FastAPI's routing and validation).
Every request below, good or bad, must get the same status, the same error field and, for
predictions, the same classes and probabilities from both.
"""

from __future__ import annotations

import httpx
import pytest

from tests.serving.factories import REALISTIC_PRODUCTS

pytestmark = pytest.mark.slow

LIMITS = {"RAKUTEN_MAX_TEXT_CHARS": "60", "RAKUTEN_MAX_BATCH_ITEMS": "3"}
JSON = {"content-type": "application/json"}
ITEM = {"designation": "Lampe de chevet LED"}

CASES = [
    ("/predict", {"json": REALISTIC_PRODUCTS[0]}),
    ("/predict?k=5", {"json": REALISTIC_PRODUCTS[1]}),
    ("/predict?k=1&k=27", {"json": REALISTIC_PRODUCTS[2]}),
    ("/predict?other=1", {"json": {**REALISTIC_PRODUCTS[3], "unknown_field": 1, "productid": 12, "imageid": 3}}),
    ("/predict?k=0", {"json": ITEM}),
    ("/predict?k=28", {"json": ITEM}),
    ("/predict?k=abc", {"json": ITEM}),
    ("/predict?k=", {"json": ITEM}),
    ("/predict", {"json": {}}),
    ("/predict", {"json": {"designation": ""}}),
    ("/predict", {"json": {"designation": " \t "}}),
    ("/predict", {"json": {"designation": 42}}),
    ("/predict", {"json": {"designation": None}}),
    ("/predict", {"json": {"designation": "ok", "productid": -1}}),
    ("/predict", {"json": {"designation": "ok", "productid": "abc"}}),
    ("/predict", {"json": {"designation": "x" * 61}}),  # over RAKUTEN_MAX_TEXT_CHARS
    ("/predict", {"json": {"designation": "ok", "description": "y" * 61}}),
    ("/predict", {"json": {"designation": "x" * 60, "description": "y" * 60}}),  # at the limit: fine
    ("/predict", {"json": ["designation"]}),
    ("/predict", {"json": "designation"}),
    ("/predict", {"content": b"", "headers": JSON}),
    ("/predict", {"content": b"   ", "headers": JSON}),
    ("/predict", {"content": b'{"designation": ', "headers": JSON}),
    ("/predict", {"content": b'{"designation": "caf\xe9"}', "headers": JSON}),
    ("/predict", {"content": b'{"designation": "' + b"a" * 1_100_000 + b'"}', "headers": JSON}),
    ("/predict", {"content": b"designation=x", "headers": {"content-type": "application/x-www-form-urlencoded"}}),
    ("/predict", {"content": b'{"designation": "Jeu"}', "headers": {"content-type": "application/json; charset=utf-8"}}),
    ("/predict/batch", {"json": {"items": [ITEM, REALISTIC_PRODUCTS[0], REALISTIC_PRODUCTS[4]]}}),
    ("/predict/batch?k=2", {"json": {"items": [ITEM]}}),
    ("/predict/batch", {"json": {"items": [ITEM] * 4}}),  # over RAKUTEN_MAX_BATCH_ITEMS
    ("/predict/batch", {"json": {"items": []}}),
    ("/predict/batch", {"json": {"items": [ITEM, {"designation": ""}]}}),
    ("/predict/batch", {"json": {"items": ITEM}}),
    ("/predict/batch", {"json": [ITEM]}),
]  # fmt: skip


@pytest.fixture
def both_apis(registered_model, tmp_path, start_api):
    fast = start_api(registered_model, f"sqlite:///{tmp_path / 'fast.db'}", **LIMITS)
    routed = start_api(
        registered_model, f"sqlite:///{tmp_path / 'routed.db'}", RAKUTEN_SERVE_FAST_PATH="false", **LIMITS
    )
    return fast, routed


def _comparable(response: httpx.Response) -> dict:
    body = response.json()
    if response.status_code != 200:
        return {
            "status": response.status_code,
            "field": body.get("field"),
            "has_error": bool(body.get("error")),
        }
    predictions = body.get("predictions", [body])
    for prediction in predictions:
        assert len(prediction["prediction_id"]) >= 32
    return {
        "status": 200,
        "predictions": [
            (p["prdtypecode"], p["category"], round(p["confidence"], 12), p["model_version"],
             [(t["prdtypecode"], t["category"], round(t["probability"], 12)) for t in p["top_k"]])
            for p in predictions
        ],
    }  # fmt: skip


def test_fast_path_answers_as_the_fastapi_routes(both_apis):
    fast, routed = both_apis
    seen_statuses = set()
    with httpx.Client(base_url=fast.url, timeout=30) as a, httpx.Client(base_url=routed.url, timeout=30) as b:
        for path, kwargs in CASES:
            got, expected = a.post(path, **kwargs), b.post(path, **kwargs)
            assert _comparable(got) == _comparable(expected), (path, str(kwargs)[:200], got.text[:300])
            assert got.headers["content-type"] == "application/json"
            seen_statuses.add(got.status_code)
            if got.status_code == 503:
                assert got.headers.get("retry-after") == "5"
        assert seen_statuses == {200, 400, 413, 415, 422}
        # the error says what is wrong, in the same words where both parse the same way
        long = a.post("/predict", json={"designation": "x" * 61}).json()
        assert long["field"] == "designation" and "at most 60 characters" in long["error"]
        many = a.post("/predict/batch", json={"items": [ITEM] * 4}).json()
        assert many["field"] == "items" and "at most 3 items" in many["error"]
        k = a.post("/predict?k=0", json=ITEM).json()
        assert k["field"] == "k" and "greater than or equal to 1" in k["error"]
        empty = a.post("/predict", content=b"", headers=JSON).json()
        assert empty["field"] == "body" and "required" in empty["error"].lower()
        # the documented schema carries the configured limits
        schema = a.get("/openapi.json").json()["components"]["schemas"]
        assert schema["ProductIn"]["properties"]["designation"]["maxLength"] == 60
        assert schema["BatchIn"]["properties"]["items"]["maxItems"] == 3
        # both paths are counted by route in the same metric
        for api in (fast, routed):
            text = httpx.get(f"{api.url}/metrics", timeout=10).text
            assert 'rakuten_http_requests_total{method="POST",route="/predict",status="200"}' in text
            assert 'route="/predict/batch",status="422"' in text
