"""The request bodies accept what their OpenAPI schema says, and refuse the rest.

- The request models against their own JSON schema (the ``jsonschema`` validator, and the Rust
  one schemathesis uses): for every tricky input the verdicts agree; and the models refuse the
  same inputs from JSON bytes (the fast path's ``validate_json``) and from parsed JSON (FastAPI's
  routes).
- Over real HTTP, the fast path (the shared API) and FastAPI's routes (a second API with
  ``RAKUTEN_SERVE_FAST_PATH=false``, the admin token set) answer each case with the same status
  and the same field named.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import jsonschema_rs
import pytest

from rakuten_mlops.serving.app import create_app
from rakuten_mlops.serving.schemas import MAX_ID, BatchIn, FeedbackItemIn, ProductIn, ReloadIn, RollbackIn
from rakuten_mlops.settings import Settings
from tests.serving.factories import ADMIN_TOKEN, serve_own_model

OK = {"designation": "Manette sans fil"}

# (body, accepted): every JSON type a field can be sent as, and the boundaries of the rules
PRODUCTS = [
    (OK, True),
    ({**OK, "productid": 42, "imageid": 0}, True),
    ({**OK, "productid": 42.0}, True),  # a JSON Schema integer: a number without a fractional part
    ({**OK, "imageid": 1e3}, True),
    ({**OK, "productid": MAX_ID}, True),
    ({**OK, "productid": MAX_ID + 1}, False),
    ({**OK, "productid": -1}, False),
    ({**OK, "imageid": True}, False),
    ({**OK, "imageid": False}, False),
    ({**OK, "productid": "42"}, False),
    ({**OK, "productid": 42.5}, False),
    ({**OK, "productid": [42]}, False),
    ({**OK, "productid": None, "imageid": None, "description": None}, True),
    ({"designation": 123}, False),
    ({"designation": True}, False),
    ({"designation": ["Manette"]}, False),
    ({**OK, "description": 123}, False),
    ({**OK, "description": ""}, True),
    ({**OK, "description": "   "}, True),
    ({"designation": ""}, False),
    ({"designation": " \t\n "}, False),
    ({"designation": "\x1d"}, False),  # whitespace to Python, not to JSON Schema's \s
    ({"designation": "\ufeff"}, False),  # whitespace to JSON Schema's \s, not to Python
    ({"designation": "\x85\u3000\u2028"}, False),
    ({"designation": "\u200b"}, True),  # a zero-width space is not whitespace in any dialect
    ({"designation": " x "}, True),
    ({"designation": "x" * 10_000}, True),
    ({"designation": "x" * 10_001}, False),
    ({"designation": "😀" * 10_000}, True),  # lengths count characters (code points), not bytes
    ({}, False),
    ({**OK, "unknown": {"any": ["thing"]}}, True),  # unknown fields are ignored (and allowed)
]

LABELS = [
    ({"productid": 7, "prdtypecode": 2583}, True),
    ({"prediction_id": "abc", "prdtypecode": 2583, "source": "moderation"}, True),
    ({"prediction_id": "abc", "productid": None, "prdtypecode": 2583}, True),
    ({"productid": 7, "prdtypecode": 2583.0}, True),
    ({"productid": 7, "prdtypecode": "2583"}, False),
    ({"productid": 7, "prdtypecode": 12}, False),  # not one of the 27 codes
    ({"productid": "7", "prdtypecode": 2583}, False),
    ({"productid": True, "prdtypecode": 2583}, False),
    ({"prediction_id": 7, "prdtypecode": 2583}, False),
    ({"prediction_id": "abc", "productid": 7, "prdtypecode": 2583}, False),  # exactly one reference
    ({"prediction_id": None, "productid": None, "prdtypecode": 2583}, False),
    ({"prdtypecode": 2583}, False),
    ({"productid": 7, "prdtypecode": 2583, "extra": 1}, False),  # labels forbid unknown fields
    ({"productid": 7, "prdtypecode": 2583, "source": "mod\x00eration"}, False),  # PostgreSQL text: no NUL
    ({"prediction_id": "ab\x00", "prdtypecode": 2583}, False),
]

ADMIN = [
    (ReloadIn, {"force": True}, True),
    (ReloadIn, {"force": "true"}, False),
    (ReloadIn, {"force": 1}, False),
    (RollbackIn, {"to": "3", "reason": "bad model"}, True),
    (RollbackIn, {"to": 3}, False),
    (RollbackIn, {"reason": None}, False),
    (RollbackIn, {"reason": "bad\x00model"}, False),
]

CASES = (
    [(ProductIn, body, ok) for body, ok in PRODUCTS]
    + [(BatchIn, {"items": [OK, body]}, ok) for body, ok in PRODUCTS[:12]]
    + [(FeedbackItemIn, body, ok) for body, ok in LABELS]
    + ADMIN
)


def _accepts(model, body) -> bool:
    """The model's verdict, checked to be the same from JSON bytes and from parsed JSON."""
    verdicts = []
    for validate in (
        lambda: model.model_validate_json(json.dumps(body)),
        lambda: model.model_validate(json.loads(json.dumps(body))),
    ):
        try:
            validate()
            verdicts.append(True)
        except ValueError:
            verdicts.append(False)
    assert verdicts[0] == verdicts[1], f"{model.__name__} {body}: JSON bytes and parsed JSON disagree"
    return verdicts[0]


@pytest.mark.parametrize(("model", "body", "accepted"), CASES, ids=lambda v: getattr(v, "__name__", None))
def test_the_model_and_its_json_schema_agree(model, body, accepted):
    schema = model.model_json_schema()
    assert jsonschema.Draft202012Validator(schema).is_valid(body) is accepted, "jsonschema"
    assert jsonschema_rs.validator_for(schema).is_valid(body) is accepted, "jsonschema-rs"
    assert _accepts(model, body) is accepted


def test_the_openapi_document_states_the_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("RAKUTEN_FEEDBACK_TOKEN", raising=False)
    doc = create_app(
        Settings(home=tmp_path, admin_token="a-0123456789abcdef"), prediction_log=False
    ).openapi()
    schemas = doc["components"]["schemas"]
    designation = schemas["ProductIn"]["properties"]["designation"]
    assert designation["minLength"] == 1 and designation["pattern"].startswith("[^")
    assert schemas["ProductIn"]["properties"]["productid"]["anyOf"][0] == {
        "type": "integer", "minimum": 0, "maximum": MAX_ID
    }  # fmt: skip
    assert [branch["required"] for branch in schemas["FeedbackItemIn"]["oneOf"]] == [
        ["prediction_id"],
        ["productid"],
    ]
    # every refusal a route can answer is documented, with the error body's schema
    for path, method, statuses in [
        ("/predict", "post", {400, 409, 413, 415, 422, 503}),
        ("/predict/batch", "post", {400, 409, 413, 415, 422, 503}),
        ("/feedback", "post", {400, 401, 404, 413, 415, 422, 503}),
        ("/admin/reload", "post", {400, 401, 404, 413, 415, 422, 503}),
        ("/admin/rollback", "post", {400, 401, 404, 409, 413, 415, 422, 503}),
        ("/admin/retrain", "post", {401, 409, 413, 415, 502}),
        ("/admin/retrain/{job_id}", "get", {401, 404, 422, 502}),
    ]:
        responses = doc["paths"][path][method]["responses"]
        assert {int(s) for s in responses if s[0] in "45"} == statuses, (path, sorted(responses))
        for status in statuses:
            body = responses[str(status)]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ErrorOut"}, (path, status)
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 body is never what is sent


# --- over real HTTP: the fast path and FastAPI's routes ----------------------------------------


@pytest.fixture(scope="module")
def routed_api(mlflow_server, logged_pipelines, tmp_path_factory):
    """An API answering predictions through FastAPI's routes (fast path off), admin token set."""
    home = tmp_path_factory.mktemp("routed-api")
    api = serve_own_model(
        mlflow_server.uri,
        logged_pipelines[0],
        home,
        RAKUTEN_SERVE_FAST_PATH="false",
        RAKUTEN_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    yield api
    api.terminate()


JSON = {"content-type": "application/json"}

# (path, body as sent, status, field named)
HTTP_CASES = [
    ("/predict", {**OK, "imageid": True}, 422, "imageid"),
    ("/predict", {**OK, "productid": "42"}, 422, "productid"),
    ("/predict", {**OK, "productid": 42.5}, 422, "productid"),
    ("/predict", {**OK, "productid": 42.0}, 200, None),
    ("/predict", {**OK, "productid": MAX_ID + 1}, 422, "productid"),
    ("/predict", {"designation": 123}, 422, "designation"),
    ("/predict", {**OK, "description": 123}, 422, "description"),
    ("/predict", {"designation": "\x1d"}, 422, "designation"),
    ("/predict", {"designation": "\ufeff"}, 422, "designation"),
    ("/predict/batch", {"items": [OK, {**OK, "imageid": "7"}]}, 422, "items[1].imageid"),
    ("/predict/batch", {"items": [OK, {"designation": False}]}, 422, "items[1].designation"),
    ("/predict/batch", {"items": [OK, {**OK, "productid": 7.0}]}, 200, None),
    ("/predict?k=2.5", OK, 422, "k"),
    ("/predict?k=true", OK, 422, "k"),
    ("/predict?explain=maybe", OK, 422, "explain"),
    ("/predict?explain=true&explain_top=0", OK, 422, "explain_top"),
    ("/predict", b'{"designation": "x", "productid": 1', 400, "body"),
    ("/predict", b'{"designation": "x", "productid": NaN}', 422, "productid"),  # not JSON, yet parsed
    ("/predict", b'{"designation": "x", "imageid": 1e400}', 422, "imageid"),
]


@pytest.mark.slow
def test_the_fast_path_and_the_routes_refuse_alike(shared_api, routed_api):
    for path, body, status, field in HTTP_CASES:
        answers = []
        for api in (shared_api, routed_api):
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            answers.append(httpx.post(f"{api.url}{path}", content=content, headers=JSON, timeout=30))
        for answer in answers:
            assert answer.status_code == status, (path, body, answer.text)
            if field is not None:
                assert answer.json()["field"] == field, answer.text
        if status == 422:  # the same problems, each named and explained
            assert answers[0].json()["error"].startswith(f"{field}: ")
            assert answers[0].json()["detail"] == answers[1].json()["detail"], (path, body)


@pytest.mark.slow
def test_labels_and_admin_bodies_are_strict_over_http(routed_api):
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    for path, body, field in [
        ("/feedback", {"items": [{"productid": "7", "prdtypecode": 2583}]}, "items[0].productid"),
        ("/feedback", {"items": [{"productid": 7, "prdtypecode": "2583"}]}, "items[0].prdtypecode"),
        ("/feedback", {"items": [{"prediction_id": "a", "productid": 7, "prdtypecode": 2583}]}, "items[0]"),
        ("/admin/reload", {"force": "true"}, "force"),
        ("/admin/rollback", {"to": 3}, "to"),
        (
            "/feedback",
            {"items": [{"productid": 7, "prdtypecode": 2583, "source": "a\x00"}]},
            "items[0].source",
        ),
    ]:
        answer = httpx.post(f"{routed_api.url}{path}", json=body, headers=auth, timeout=30)
        assert answer.status_code == 422 and answer.json()["field"] == field, (path, answer.text)
        assert "should match pattern" not in answer.json()["error"]  # the rule is said in words
