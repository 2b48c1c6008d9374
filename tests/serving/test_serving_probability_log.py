"""The prediction log keeps each prediction's top classes and probabilities (for the performance
estimate): the real API over HTTP, COPY into a real Postgres."""

from __future__ import annotations

import httpx
import pytest

from tests.serving.factories import REALISTIC_PRODUCTS, wait_rows

pytestmark = pytest.mark.slow


def test_every_logged_prediction_carries_its_top_five_probabilities(registered_model, pg_url, start_api):
    from rakuten_mlops.model.probabilities import LOGGED_TOP_K, decode_many

    api = start_api(registered_model, pg_url)
    items = [dict(p) for p in REALISTIC_PRODUCTS]
    with httpx.Client(base_url=api.url, timeout=30) as client:
        response = client.post("/predict/batch", params={"k": 1}, json={"items": items})  # asks for one class
    assert response.status_code == 200, response.text
    answers = {p["prediction_id"]: p for p in response.json()["predictions"]}
    rows = wait_rows(pg_url, len(items), timeout=10)
    assert len(rows) == len(items)
    codes, probabilities = decode_many([row.probabilities for row in rows])
    assert codes.shape == (len(items), LOGGED_TOP_K)  # the log keeps five whatever the client asked
    for row, row_codes, row_p in zip(rows, codes, probabilities, strict=True):
        answer = answers[row.prediction_id]
        assert row_codes[0] == row.prdtypecode == answer["prdtypecode"]
        assert row_p[0] == pytest.approx(answer["confidence"], abs=1e-3)  # float16
        assert list(row_p) == sorted(row_p, reverse=True) and row_p.sum() <= 1.0 + 1e-3
        assert len(set(row_codes.tolist())) == LOGGED_TOP_K


@pytest.mark.parametrize("k", [2, 5, 8], ids=["two-classes", "five", "eight"])
def test_a_batch_is_encoded_as_each_row_alone(k):
    """``encode_many`` (the request path's, column by column) gives each row ``encode``'s bytes,
    padding included for a model with fewer classes than the log keeps."""
    import random

    from rakuten_mlops.model.probabilities import encode, encode_many

    rng = random.Random(k)
    codes = [rng.sample([10, 40, 50, 60, 1140, 1160, 1180, 1280, 2583], k) for _ in range(300)]
    probabilities = [sorted((rng.random() ** 4 for _ in range(k)), reverse=True) for _ in range(300)]
    assert encode_many(codes, probabilities) == [
        encode(c, p) for c, p in zip(codes, probabilities, strict=True)
    ]
    assert encode_many([], []) == []
