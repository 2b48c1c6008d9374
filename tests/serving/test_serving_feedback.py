"""``POST /feedback`` over real HTTP: `rakuten-mlops serve` on loopback with a real Postgres
prediction log and the session's MLflow server; realized F1 computed by the real CLI.

One API process and one database serve the whole module: each test labels predictions it made
itself, and counts only the label rows of those predictions."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from tests.serving.factories import ADMIN_TOKEN, CLI, ApiProcess, register_logged, sample_frame
from tests.support import temporary_database, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
FEEDBACK_TOKEN = "test-feedback-token-9d3e71"
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def feedback_db(pg_server: str) -> Iterator[str]:
    with temporary_database(pg_server, "rk_feedback") as url:
        yield url


@pytest.fixture(scope="module")
def api(mlflow_server, logged_pipelines, feedback_db, tmp_path_factory) -> Iterator[ApiProcess]:
    name = f"rakuten_classifier_{uuid.uuid4().hex[:8]}"
    register_logged(mlflow_server.uri, name, logged_pipelines[0])
    home = tmp_path_factory.mktemp("feedback-api")
    process = ApiProcess(
        {
            "RAKUTEN_HOME": str(home),
            "RAKUTEN_DATABASE_URL": feedback_db,
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
            "RAKUTEN_REGISTERED_MODEL": name,
            "RAKUTEN_MODEL_POLL_SECONDS": "0",
            "RAKUTEN_ADMIN_TOKEN": ADMIN_TOKEN,
            "RAKUTEN_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
            "RAKUTEN_PREDICTION_LOG_FLUSH_SECONDS": "0.1",
        },
        home / "api.log",
    ).start()
    yield process
    process.terminate()


@pytest.fixture(scope="module")
def client(api: ApiProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as http:
        yield http


def scalar(url: str, sql: str, **params):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def logged(url: str, prediction_ids: list[str]) -> bool:
    query = "select count(*) from predictions where prediction_id = any(:ids)"
    try:
        return scalar(url, query, ids=prediction_ids) == len(prediction_ids)
    except sa.exc.ProgrammingError:  # the API has not created the table yet
        return False


def predict(client: httpx.Client, url: str, items: list[dict]) -> list[dict]:
    """Classify ``items`` and wait until the prediction log holds them."""
    response = client.post("/predict/batch", json={"items": items})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    ids = [p["prediction_id"] for p in predictions]
    wait_until(lambda: logged(url, ids), timeout=10, what="predictions logged")
    return predictions


def labels_of(url: str, prediction_ids: list[str]) -> int:
    return scalar(
        url, "select count(*) from prediction_labels where prediction_id = any(:ids)", ids=prediction_ids
    )


def products(n: int, offset: int = 0) -> list[dict]:
    frame = sample_frame().iloc[offset : offset + n]
    return [{"designation": r.designation, "description": r.description} for r in frame.itertuples()]


def test_feedback_needs_the_feedback_token_or_the_admin_token(client, feedback_db):
    (prediction,) = predict(client, feedback_db, products(1))
    body = {"items": [{"prediction_id": prediction["prediction_id"], "prdtypecode": 2583, "source": "auth"}]}
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {FEEDBACK_TOKEN}"},
    ):
        refused = client.post("/feedback", json=body, headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in refused.json()["error"]
    assert client.post("/feedback", json={"items": "bad"}).status_code == 401  # the token is checked first
    assert labels_of(feedback_db, [prediction["prediction_id"]]) == 0
    by_feedback = client.post("/feedback", json=body, headers=FEEDBACK)
    assert by_feedback.status_code == 200, by_feedback.text
    assert (by_feedback.json()["stored"], by_feedback.json()["unchanged"]) == (1, 0)
    by_admin = client.post("/feedback", json=body, headers=ADMIN)
    assert by_admin.status_code == 200 and by_admin.json()["unchanged"] == 1
    assert client.post("/admin/reload", headers=FEEDBACK).status_code == 401  # not an admin token


def test_unknown_prediction_ids_are_named_and_nothing_is_stored(client, feedback_db):
    known = [p["prediction_id"] for p in predict(client, feedback_db, products(2, offset=10))]
    missing = str(uuid.uuid4())
    items = [
        {"prediction_id": known[0], "prdtypecode": 10},
        {"prediction_id": missing, "prdtypecode": 10},
        {"prediction_id": known[1], "prdtypecode": 40},
        {"productid": 987654321987, "prdtypecode": 40},
    ]
    response = client.post("/feedback", json={"items": items}, headers=FEEDBACK)
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["field"] == "items[1].prediction_id" and missing in body["error"]
    assert [d["field"] for d in body["detail"]] == ["items[1].prediction_id", "items[3].productid"]
    assert "987654321987" in body["detail"][1]["message"]
    assert labels_of(feedback_db, known) == 0, "a batch with an unknown prediction stores nothing"


def test_unknown_classes_and_malformed_items_are_named_and_nothing_is_stored(client, feedback_db):
    (prediction,) = predict(client, feedback_db, products(1, offset=20))
    pid = prediction["prediction_id"]
    cases = [
        ({"prediction_id": pid, "prdtypecode": 1234}, "items[1].prdtypecode", "unknown prdtypecode 1234"),
        ({"prdtypecode": 10}, "items[1]", "exactly one of prediction_id and productid"),
        ({"prediction_id": pid, "productid": 5, "prdtypecode": 10}, "items[1]", "exactly one"),
        ({"prediction_id": pid, "prdtypecode": 10, "source": ""}, "items[1].source", "at least 1"),
        ({"prediction_id": pid, "prdtypecode": 10, "label": 40}, "items[1].label", "Extra inputs"),
    ]
    for bad, field, message in cases:
        items = [{"prediction_id": pid, "prdtypecode": 10}, bad]
        response = client.post("/feedback", json={"items": items}, headers=FEEDBACK)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field and message in response.json()["error"], response.json()
    too_many = [{"prediction_id": pid, "prdtypecode": 10}] * 1001
    response = client.post("/feedback", json={"items": too_many}, headers=FEEDBACK)
    assert response.status_code == 422 and response.json()["field"] == "items", response.text
    assert client.post("/feedback", json={"items": []}, headers=FEEDBACK).status_code == 422
    huge = {
        "items": [{"prediction_id": pid, "prdtypecode": 10, "source": "x" * 64}] * 1000,
        "pad": "x" * 10**6,
    }
    response = client.post("/feedback", json=huge, headers=FEEDBACK)
    assert response.status_code == 413 and response.json()["field"] == "body", response.text
    assert labels_of(feedback_db, [pid]) == 0


def test_the_same_label_twice_is_idempotent_and_a_new_code_wins(client, feedback_db):
    a, b = (p["prediction_id"] for p in predict(client, feedback_db, products(2, offset=30)))
    first = [
        {"prediction_id": a, "prdtypecode": 10, "source": "merchant"},
        {"prediction_id": b, "prdtypecode": 40},
    ]
    stored = client.post("/feedback", json={"items": first}, headers=FEEDBACK).json()
    assert (stored["stored"], stored["unchanged"], stored["replaced"]) == (2, 0, 0)
    again = client.post("/feedback", json={"items": first}, headers=FEEDBACK).json()
    assert (again["stored"], again["unchanged"]) == (0, 2)
    assert [i["status"] for i in again["items"]] == ["unchanged", "unchanged"]
    assert labels_of(feedback_db, [a, b]) == 2

    changed = [{"prediction_id": a, "prdtypecode": 2583, "source": "moderation"}]
    result = client.post("/feedback", json={"items": changed}, headers=FEEDBACK).json()
    assert (result["stored"], result["replaced"]) == (1, 1)
    assert result["items"][0]["previous_prdtypecode"] == 10
    same_code_other_source = [{"prediction_id": b, "prdtypecode": 40, "source": "moderation"}]
    confirmed = client.post("/feedback", json={"items": same_code_other_source}, headers=FEEDBACK).json()
    assert (confirmed["stored"], confirmed["replaced"]) == (1, 0)
    assert labels_of(feedback_db, [a, b]) == 4
    newest = scalar(
        feedback_db,
        "select prdtypecode from prediction_labels where prediction_id = :a order by revision desc limit 1",
        a=a,
    )
    assert newest == 2583


def test_concurrent_copies_of_one_batch_store_each_label_once(client, feedback_db):
    """Eight identical requests at once race on the same predictions' first revision."""
    from concurrent.futures import ThreadPoolExecutor

    ids = [p["prediction_id"] for p in predict(client, feedback_db, products(40, offset=60))]
    body = {"items": [{"prediction_id": pid, "prdtypecode": 1160, "source": "race"} for pid in ids]}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/feedback", json=body, headers=FEEDBACK), range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers if a.status_code != 200]
    assert sum(a.json()["stored"] for a in answers) == len(ids)
    assert sum(a.json()["unchanged"] for a in answers) == 7 * len(ids)
    assert labels_of(feedback_db, ids) == len(ids)


def test_productid_names_the_latest_prediction_of_that_product(client, feedback_db):
    productid = 7_000_000_000 + uuid.uuid4().int % 1_000_000
    item = {**products(1, offset=40)[0], "productid": productid}
    (older,) = predict(client, feedback_db, [item])
    (newer,) = predict(client, feedback_db, [item])
    response = client.post(
        "/feedback", json={"items": [{"productid": productid, "prdtypecode": 1280}]}, headers=FEEDBACK
    )
    assert response.status_code == 200, response.text
    (stored,) = response.json()["items"]
    assert stored["prediction_id"] == newer["prediction_id"] != older["prediction_id"]
    assert stored["model_version"] == newer["model_version"]
    assert labels_of(feedback_db, [older["prediction_id"]]) == 0


def test_database_down_gives_503_with_retry_after_and_stores_nothing(client, feedback_db, pg_server):
    """The data database refuses connections (ALLOW_CONNECTIONS false, sessions terminated)."""
    ids = [p["prediction_id"] for p in predict(client, feedback_db, products(3, offset=50))]
    body = {"items": [{"prediction_id": pid, "prdtypecode": 50} for pid in ids]}
    name = feedback_db.rsplit("/", 1)[1]
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                sa.text("select pg_terminate_backend(pid) from pg_stat_activity where datname = :n"),
                {"n": name},
            )
        response = client.post("/feedback", json=body, headers=FEEDBACK)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        assert "nothing was stored" in response.json()["error"]
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    assert labels_of(feedback_db, ids) == 0
    retried = client.post("/feedback", json=body, headers=FEEDBACK)
    assert retried.status_code == 200 and retried.json()["stored"] == 3, retried.text


def test_realized_f1_from_feedback_matches_sklearn_and_reaches_metrics(client, feedback_db, api, tmp_path):
    """Labels for 120 sample rows (a third deliberately wrong) -> `evaluate-feedback` -> the
    stored weighted F1 equals sklearn's on the same rows, and /metrics exports it."""
    from sklearn.metrics import f1_score

    engine = sa.create_engine(feedback_db)
    with engine.begin() as conn:  # only this test's labels are in the window
        conn.execute(sa.text("delete from prediction_labels"))
    engine.dispose()
    frame = sample_frame().iloc[100:220]
    items = [{"designation": r.designation, "description": r.description} for r in frame.itertuples()]
    predictions = predict(client, feedback_db, items)
    truth = frame["prdtypecode"].astype(int).tolist()
    codes = sorted(set(truth))
    truth = [codes[(codes.index(t) + 1) % len(codes)] if i % 3 == 0 else t for i, t in enumerate(truth)]
    body = {
        "items": [
            {"prediction_id": p["prediction_id"], "prdtypecode": t}
            for p, t in zip(predictions, truth, strict=True)
        ]
    }
    assert client.post("/feedback", json=body, headers=FEEDBACK).json()["stored"] == len(items)
    expected = f1_score(truth, [p["prdtypecode"] for p in predictions], average="weighted", zero_division=0)

    env = {**os.environ, "RAKUTEN_HOME": str(tmp_path / "home"), "RAKUTEN_DATABASE_URL": feedback_db}
    proc = subprocess.run(
        [*CLI, "evaluate-feedback", "--window", "1h", "--min-labels", "100", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (version,) = json.loads(proc.stdout)["versions"]
    assert version["n"] == len(items) and version["evaluation_id"] is not None
    assert version["f1_weighted"] == pytest.approx(expected, abs=1e-12)
    assert 0.2 < expected < 0.9, "a third of the labels disagree: the F1 is neither perfect nor nil"
    stored = scalar(
        feedback_db, "select f1_weighted from feedback_evaluations where id = :i", i=version["evaluation_id"]
    )
    assert stored == pytest.approx(expected, abs=1e-12)

    metrics = client.get("/metrics").text
    line = f'rakuten_model_live_f1{{version="{version["model_version"]}"}}'
    (sample,) = [m for m in metrics.splitlines() if m.startswith(line)]
    assert float(sample.split()[-1]) == pytest.approx(expected, abs=1e-9)


def test_openapi_documents_the_route_and_no_generated_request_gets_a_5xx(client, api):
    """The route's OpenAPI entry, then Schemathesis (valid and schema-violating bodies) with the token."""

    import schemathesis
    from hypothesis import HealthCheck, given, settings

    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/feedback"]["post"]
    assert {"401", "404", "422", "503"} <= set(operation["responses"])
    assert [list(s) for s in operation["security"]] == [["HTTPBearer"]]
    schemas = spec["components"]["schemas"]
    item = schemas["FeedbackItemIn"]["properties"]
    assert len(item["prdtypecode"]["enum"]) == 27 and 2583 in item["prdtypecode"]["enum"]
    assert schemas["FeedbackIn"]["properties"]["items"]["maxItems"] == 1000
    assert {"stored", "unchanged", "replaced", "items"} <= set(schemas["FeedbackOut"]["properties"])

    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    (feedback_op,) = [r.ok() for r in schema.get_all_operations() if r.ok().path == "/feedback"]
    server_errors: list[str] = []
    statuses: set[int] = set()
    for mode in schemathesis.GenerationMode:

        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=feedback_op.as_strategy(generation_mode=mode))
        def call(case) -> None:
            case.headers = {**(case.headers or {}), **FEEDBACK}  # not a generated token
            response = case.call(base_url=api.url, timeout=30)
            statuses.add(response.status_code)
            if response.status_code >= 500:
                server_errors.append(f"{case.body!r} -> {response.status_code}: {response.text}")

        call()
    assert server_errors == []
    assert {404, 422} <= statuses, statuses
