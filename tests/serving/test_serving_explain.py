"""Explanations: each n-gram's exact share of a class score, in-process and over real HTTP.

In-process: the contributions of :mod:`rakuten_mlops.model.explain` add up to the classifier's own
decision values and give the served probabilities. Over HTTP: the session's API (fast path) and
one with ``RAKUTEN_SERVE_FAST_PATH=false`` (FastAPI's routes), same model, answer ``?explain=true``
identically, single and batch, and refuse bad parameter values naming the parameter.
"""

from __future__ import annotations

import asyncio
import copy
import math
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from rakuten_mlops.model.explain import contributions, explain, explainer_for
from rakuten_mlops.model.pipeline import clean_text, softmax
from rakuten_mlops.model.runner import CompiledLinearPipeline, plan_for
from tests.serving.factories import REALISTIC_PRODUCTS, sample_frame
from tests.support import wait_until

AWKWARD = [
    ("zzqx wvyk qqpl", "mots inconnus partout"),  # no known n-gram: the score is the intercept
    ("Ã©dition limitÃ©e &amp; <b>collector</b>", "Ã  prix rÃ©duit"),
    ("Figurine 🐉 Dragon Ball", ""),
]


def _products() -> tuple[list[str], list[str]]:
    real = sample_frame().iloc[:120]
    designations = [p["designation"] for p in REALISTIC_PRODUCTS] + real["designation"].tolist()
    descriptions = [p.get("description", "") for p in REALISTIC_PRODUCTS] + real["description"].tolist()
    return designations + [d for d, _ in AWKWARD], descriptions + [e for _, e in AWKWARD]


def _words(text: str) -> str:
    """A text as the vectorizers see it: cleaned, lowercased, accents folded, tokens spaced."""
    import re

    return " " + " ".join(re.findall(r"(?u)\b\w\w+\b", clean_text(text).lower())) + " "


def test_contributions_add_up_to_the_classifiers_decision_values(fitted_pipelines):
    pipeline = fitted_pipelines[0]
    classifier = pipeline.named_steps["classifier"]
    designations, descriptions = _products()
    runner = plan_for(pipeline)
    assert isinstance(runner, CompiledLinearPipeline)
    explainer = explainer_for(pipeline, runner)
    matrix = explainer.matrix(designations, descriptions)
    # the runner's matrix is the one its predictions come from
    proba, _ = runner.run(designations, descriptions)
    np.testing.assert_allclose(classifier.predict_proba(matrix), proba, rtol=1e-12)
    decision = classifier.decision_function(matrix)  # float32 arithmetic, as the runner's
    frame = pd.DataFrame({"designation": designations, "description": descriptions})
    pipeline_decision = classifier.decision_function(pipeline[:-1].transform(frame))
    np.testing.assert_allclose(decision, pipeline_decision, atol=1e-5)
    exact = matrix.astype(np.float64) @ explainer.coef_t.astype(np.float64) + explainer.intercept
    for row in range(len(designations)):
        _, contribution = contributions(explainer, matrix, row)
        totals = contribution.sum(axis=0) + explainer.intercept
        np.testing.assert_allclose(totals, exact[row], rtol=0, atol=1e-12)
        np.testing.assert_allclose(totals, decision[row], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(softmax(exact), proba, rtol=1e-5, atol=1e-9)
    # probabilities are softmax(temperature x score): contributions are in score units, before it
    # (the sample is too small for a fitted temperature: a copy of the model gets one)
    warmer = copy.deepcopy(pipeline)
    warmer.named_steps["classifier"].temperature_ = 2.5
    warm = explainer_for(warmer, plan_for(warmer))
    warm_proba, _ = plan_for(warmer).run(designations, descriptions)
    assert warm.temperature == 2.5
    warm_scores = [
        contributions(warm, matrix, row)[1].sum(axis=0) + warm.intercept for row in range(len(designations))
    ]
    np.testing.assert_allclose(warm_scores, exact, atol=1e-12)
    np.testing.assert_allclose(softmax(2.5 * exact), warm_proba, rtol=1e-5, atol=1e-9)
    # the pipeline's own features step (the runner-less fallback) explains the same way
    plain = explainer_for(pipeline)
    plain_matrix = plain.matrix(designations, descriptions)
    predicted = explainer.classes[proba.argmax(axis=1)].tolist()
    got, expected = explain(plain, plain_matrix, predicted, 5), explain(explainer, matrix, predicted, 5)
    for a, b in zip(got, expected, strict=True):
        for part in ("predicted", "runner_up"):
            assert [t["feature"] for t in a[part]["tokens"]] == [t["feature"] for t in b[part]["tokens"]]
            assert a[part]["score"] == pytest.approx(b[part]["score"], abs=1e-5)


def test_explanation_lists_the_features_that_pushed_each_class_most(fitted_pipelines):
    pipeline = fitted_pipelines[0]
    designations, descriptions = _products()
    explainer = explainer_for(pipeline, plan_for(pipeline))
    matrix = explainer.matrix(designations, descriptions)
    decision = matrix.astype(np.float64) @ explainer.coef_t.astype(np.float64) + explainer.intercept
    predicted = explainer.classes[decision.argmax(axis=1)].tolist()
    explanations = explain(explainer, matrix, predicted, 4, category=lambda code: f"name of {code}")
    listed = 0
    for row, explanation in enumerate(explanations):
        order = np.argsort(-decision[row], kind="stable")
        assert explanation["temperature"] == explainer.temperature
        for part, column in (("predicted", order[0]), ("runner_up", order[1])):
            evidence = explanation[part]
            code = int(explainer.classes[column])
            assert evidence["prdtypecode"] == code and evidence["category"] == f"name of {code}"
            assert evidence["score"] == pytest.approx(decision[row, column], abs=1e-9)
            tokens = evidence["tokens"]
            total = evidence["intercept"] + sum(t["contribution"] for t in tokens) + evidence["rest"]
            assert total == pytest.approx(evidence["score"], abs=1e-9)
            # the listed features are the largest positive contributions, largest first
            _, contribution = contributions(explainer, matrix, row)
            expected = sorted((c for c in contribution[:, column] if c > 0), reverse=True)[:4]
            assert [t["contribution"] for t in tokens] == pytest.approx(expected, abs=1e-12)
            for token in tokens:
                assert token["tfidf"] * token["coefficient"] == pytest.approx(
                    token["contribution"], rel=1e-12
                )
                assert token["feature"] == f'{token["column"]}:"{token["term"]}"'
                text = designations[row] if token["column"] == "designation" else descriptions[row]
                assert f" {token['term']} " in _words(text), (token, text)
            listed += len(tokens)
    assert listed > len(explanations)  # real products do get listed features
    unknown = explanations[-3]["predicted"]  # no known n-gram: nothing listed, the score is the intercept
    assert unknown["tokens"] == [] and unknown["rest"] == 0.0 and unknown["score"] == unknown["intercept"]


def test_a_model_that_cannot_be_explained_refuses_only_the_explanation(fitted_pipelines):
    """A pipeline of another shape (scikit-learn's own SGDClassifier after the features):
    ``explain`` gets ExplanationUnavailable (409), predictions without it are served. The store
    here is a holder of the loaded model, the service and the pipeline are the real ones."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline

    from rakuten_mlops.serving.errors import ExplanationUnavailable, domain_error
    from rakuten_mlops.serving.metrics import api_metrics
    from rakuten_mlops.serving.model_store import LoadedModel
    from rakuten_mlops.serving.predictor import PredictionService

    fitted = copy.deepcopy(fitted_pipelines[0])  # the session's fit stays untouched
    frame = sample_frame()
    prepare, features = fitted.named_steps["prepare"], fitted.named_steps["features"]
    matrix = features.transform(prepare.transform(frame[["designation", "description"]]))
    classifier = SGDClassifier(loss="log_loss", max_iter=5, tol=None).fit(matrix, frame["prdtypecode"])
    other = Pipeline([("prepare", prepare), ("features", features), ("classifier", classifier)])
    with pytest.raises(TypeError, match="not a fitted SoftmaxLinearClassifier"):
        explainer_for(other)
    model = LoadedModel(
        "m", "7", None, None, {}, {}, pd.Timestamp.now(tz="UTC").to_pydatetime(), other,
        np.asarray(other.classes_), runner=plan_for(other),
    )  # fmt: skip
    service = PredictionService(SimpleNamespace(require=lambda: model), None, api_metrics())
    products = [SimpleNamespace(designation=p["designation"], description=None, productid=None)
                for p in REALISTIC_PRODUCTS[:2]]  # fmt: skip

    async def both():
        plain = await service.predict(products, 3)
        with pytest.raises(ExplanationUnavailable) as refused:
            await service.predict(products, 3, explain=5)
        return plain, refused.value

    (version, results), refused = asyncio.run(both())
    assert version == "7" and len(results) == 2 and "explanation" not in results[0]
    assert domain_error(refused)[0] == 409
    assert "model version 7 cannot be explained" in str(refused)


# --- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture
def both_apis(shared_api, registered_model, tmp_path, start_api):
    """The session's API (fast path) and one through FastAPI's routes, serving the same fit."""
    routed = start_api(
        registered_model, f"sqlite:///{tmp_path / 'routed.db'}", RAKUTEN_SERVE_FAST_PATH="false"
    )
    return shared_api, routed


def _same(body: dict) -> dict:
    """A response body without what differs between two servers (prediction ids, versions)."""
    predictions = body.get("predictions", [body])
    return [{k: v for k, v in p.items() if k not in ("prediction_id", "model_version")} for p in predictions]  # type: ignore[return-value]


def _check_explanation(prediction: dict, top: int) -> None:
    explanation = prediction["explanation"]
    predicted, runner_up = explanation["predicted"], explanation["runner_up"]
    assert predicted["prdtypecode"] == prediction["prdtypecode"]
    assert predicted["category"] == prediction["category"]
    assert runner_up["prdtypecode"] == prediction["top_k"][1]["prdtypecode"]
    assert runner_up["category"] == prediction["top_k"][1]["category"]
    # the scores are the model's: their softmax with the temperature gives the served probabilities
    ratio = prediction["top_k"][0]["probability"] / prediction["top_k"][1]["probability"]
    log_ratio = explanation["temperature"] * (predicted["score"] - runner_up["score"])
    assert math.log(ratio) == pytest.approx(log_ratio, abs=1e-4)  # served in float32 arithmetic
    for evidence in (predicted, runner_up):
        contributions_ = [t["contribution"] for t in evidence["tokens"]]
        assert len(contributions_) <= top
        assert contributions_ == sorted(contributions_, reverse=True) and all(c > 0 for c in contributions_)
        total = evidence["intercept"] + sum(contributions_) + evidence["rest"]
        assert total == pytest.approx(evidence["score"], abs=1e-9)


@pytest.mark.slow
def test_explain_over_http_on_the_fast_path_and_the_routes(both_apis):
    fast, routed = both_apis
    products = REALISTIC_PRODUCTS[:3]
    with httpx.Client(base_url=fast.url, timeout=30) as a, httpx.Client(base_url=routed.url, timeout=30) as b:
        for client in (a, b):
            plain = client.post("/predict", json=products[0])
            assert plain.status_code == 200 and "explanation" not in plain.json()
            for off in ("false", "0", "no", "off"):
                answer = client.post(f"/predict?explain={off}&explain_top=3", json=products[0])
                assert answer.status_code == 200 and "explanation" not in answer.json()
            singles = []
            for product in products:
                response = client.post("/predict?explain=true", json=product)
                assert response.status_code == 200, response.text
                _check_explanation(response.json(), 5)
                singles.append(response.json())
            assert any(s["explanation"]["predicted"]["tokens"] for s in singles)
            assert singles[0]["explanation"]["predicted"]["tokens"][0]["column"] == "designation"
            # a batch explains each product as alone (batching never changes an answer)
            batch = client.post("/predict/batch?explain=1&explain_top=2", json={"items": products})
            assert batch.status_code == 200, batch.text
            for prediction, single in zip(batch.json()["predictions"], singles, strict=True):
                _check_explanation(prediction, 2)
                for part in ("predicted", "runner_up"):
                    assert (
                        prediction["explanation"][part]["tokens"] == single["explanation"][part]["tokens"][:2]
                    )
            plain_batch = client.post("/predict/batch", json={"items": products}).json()
            assert all("explanation" not in p for p in plain_batch["predictions"])
        # both ways answer the same, to the last digit
        for path, body in (
            ("/predict?explain=true&k=4", products[1]),
            ("/predict?explain=yes&explain_top=20", products[2]),
            ("/predict/batch?explain=on", {"items": products}),
        ):
            got, expected = a.post(path, json=body), b.post(path, json=body)
            assert got.status_code == expected.status_code == 200
            assert _same(got.json()) == _same(expected.json())
            assert all("explanation" in prediction for prediction in _same(got.json()))
        # bad values are refused naming the parameter, the same way on both
        for path, field in (
            ("/predict?explain=maybe", "explain"),
            ("/predict?explain=", "explain"),
            ("/predict?explain=true&explain_top=0", "explain_top"),
            ("/predict?explain=true&explain_top=21", "explain_top"),
            ("/predict?explain_top=abc", "explain_top"),
            ("/predict/batch?explain=2", "explain"),
            ("/predict?k=0&explain=maybe", "k"),
        ):
            body = {"items": products} if "batch" in path else products[0]
            got, expected = a.post(path, json=body), b.post(path, json=body)
            assert got.status_code == expected.status_code == 422, (path, got.text)
            assert got.json()["field"] == expected.json()["field"] == field, (path, got.text)
            assert [d["field"] for d in got.json()["detail"]] == [
                d["field"] for d in expected.json()["detail"]
            ]
        assert "valid boolean" in a.post("/predict?explain=maybe", json=products[0]).json()["error"]
        # the OpenAPI schema documents the parameters and the optional explanation
        openapi = a.get("/openapi.json").json()
        for path in ("/predict", "/predict/batch"):
            names = {p["name"] for p in openapi["paths"][path]["post"]["parameters"]}
            assert {"k", "explain", "explain_top"} <= names
        schemas = openapi["components"]["schemas"]
        assert "explanation" in schemas["PredictionOut"]["properties"]
        assert "explanation" not in schemas["PredictionOut"]["required"]
        assert {"temperature", "predicted", "runner_up"} <= set(schemas["Explanation"]["properties"])
        assert "contribution" in schemas["FeatureContribution"]["properties"]
    # an explained prediction is logged like any other
    logged = singles[0]
    url = routed.env["RAKUTEN_DATABASE_URL"]

    def row():
        with sa.create_engine(url).connect() as conn:
            return conn.execute(
                sa.text("SELECT prdtypecode, confidence FROM predictions WHERE prediction_id = :id"),
                {"id": logged["prediction_id"]},
            ).first()

    found = wait_until(row, timeout=10)
    assert tuple(found) == (logged["prdtypecode"], pytest.approx(logged["confidence"]))


def test_merged_requests_each_get_the_explanation_they_asked_for(fitted_pipelines):
    """Concurrent requests merged into one model call: each gets its own explain_top, or none.
    The store here is a holder of the loaded model; service, runner and model are the real ones."""
    from rakuten_mlops.serving.metrics import api_metrics
    from rakuten_mlops.serving.model_store import LoadedModel
    from rakuten_mlops.serving.predictor import PredictionService

    pipeline = fitted_pipelines[0]
    model = LoadedModel(
        "m", "1", None, None, {}, {}, pd.Timestamp.now(tz="UTC").to_pydatetime(), pipeline,
        np.asarray(pipeline.classes_), runner=plan_for(pipeline),
    )  # fmt: skip
    service = PredictionService(SimpleNamespace(require=lambda: model), None, api_metrics())
    products = [
        SimpleNamespace(designation=p["designation"], description=p.get("description"), productid=None)
        for p in REALISTIC_PRODUCTS
    ]

    async def merged():
        await service.predict(products[:1], 3, explain=1)  # the explainer is built: no thread hop below
        return await asyncio.gather(
            service.predict(products[:2], 3, explain=2),
            service.predict(products[2:4], 3),
            service.predict(products, 3, explain=4),
            service.predict(products[4:], 3, explain=1),
        )

    answers = [results for _, results in asyncio.run(merged())]
    batch_ids = {p["prediction_id"].rsplit("-", 1)[0] for results in answers for p in results}
    assert len(batch_ids) == 1  # the four requests went through the model as one batch
    two, none, four, one = answers
    assert all("explanation" not in p for p in none)
    for results, top in ((two, 2), (four, 4), (one, 1)):
        for prediction in results:
            _check_explanation(prediction, top)
    assert [p["explanation"] for p in four[4:]] != [p["explanation"] for p in one]  # 4 vs 1 listed
    for a, b in zip(two, four[:2], strict=True):
        for part in ("predicted", "runner_up"):
            assert a["explanation"][part]["tokens"] == b["explanation"][part]["tokens"][:2]
            assert a["explanation"][part]["score"] == b["explanation"][part]["score"]
    assert sum(len(p["explanation"]["predicted"]["tokens"]) for p in four) > len(four)
