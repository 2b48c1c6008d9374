"""The served model's runner (``rakuten_mlops.model.runner``): the compiled runner gives the pipeline's
answers on realistic, real, generated and awkward products, its load-time self-check, and the whole
pipeline for every other shape."""

from __future__ import annotations

import numpy as np
import pytest

from rakuten_mlops.model.runner import CompiledLinearPipeline, WholePipeline, plan_for
from tests.serving.factories import REALISTIC_PRODUCTS, fit_pipeline


@pytest.fixture(scope="module")
def pipeline():
    return fit_pipeline(0)


def _texts(n_generated: int = 2_000) -> tuple[list[str], list[str]]:
    """Realistic, real, generated and awkward products (HTML, mojibake, empty, unknown words)."""
    from rakuten_mlops.data.generator import generate_frame
    from tests.serving.factories import sample_frame

    real = sample_frame()
    generated = generate_frame(n_generated, seed=11)
    awkward = [
        ("!!!", ""),
        ("zzqx wvyk qqpl", "mots inconnus partout"),
        ("Ã©dition limitÃ©e &amp; <b>collector</b>", "Ã  prix rÃ©duit"),
        ("Livre " * 2_000, "très " * 1_500),
        ("Figurine 🐉 Dragon Ball", "😀"),
        ("a", "b"),
    ]
    designations = (
        [p["designation"] for p in REALISTIC_PRODUCTS]
        + real["designation"].tolist()
        + generated["designation"].tolist()
        + [d for d, _ in awkward]
    )
    descriptions = (
        [p.get("description", "") for p in REALISTIC_PRODUCTS]
        + real["description"].tolist()
        + generated["description"].fillna("").tolist()
        + [e for _, e in awkward]
    )
    return designations, descriptions


def test_compiled_runner_gives_the_pipelines_predictions_and_features(pipeline):
    """The served probabilities are the pipeline's (to float32 precision: it computes in float32)."""
    designations, descriptions = _texts()
    plan = plan_for(pipeline)
    assert isinstance(plan, CompiledLinearPipeline)
    got, got_features = plan.run(designations, descriptions)
    expected, expected_features = WholePipeline(pipeline).run(designations, descriptions)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-8)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)
    assert [f[:3] for f in got_features] == [f[:3] for f in expected_features]
    np.testing.assert_allclose([f[3] for f in got_features], [f[3] for f in expected_features], atol=1e-12)
    assert all(0.0 <= f[3] <= 1.0 for f in got_features)
    # one product at a time gives the same as the batch (batching never changes an answer)
    for i in (0, 5, len(designations) - 3):
        alone, alone_features = plan.run([designations[i]], [descriptions[i]])
        np.testing.assert_allclose(alone[0], got[i], rtol=1e-12, atol=1e-15)
        assert alone_features[0] == got_features[i]


def test_runner_whose_output_differs_is_not_used(pipeline, monkeypatch, caplog):
    """The load-time self-check: a compiled runner that disagrees with the pipeline is not used."""
    original = CompiledLinearPipeline.run

    def off_by_a_little(self, designations, descriptions):
        proba, features = original(self, designations, descriptions)
        return proba[:, ::-1].copy(), features

    monkeypatch.setattr(CompiledLinearPipeline, "run", off_by_a_little)
    with caplog.at_level("WARNING", logger="rakuten_mlops.serving"):
        plan = plan_for(pipeline)
    assert isinstance(plan, WholePipeline)
    assert "compiled runner's output differs" in caplog.text


def test_other_linear_classifier_runs_the_whole_pipeline():
    """Same preparation and features, a plain scikit-learn classifier: no compiled runner."""
    from sklearn.linear_model import SGDClassifier

    from rakuten_mlops.model import build_pipeline
    from tests.serving.factories import sample_frame

    frame = sample_frame()
    other = build_pipeline("sgd")
    other.steps[-1] = ("classifier", SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=0))
    other.fit(frame[["designation", "description"]], frame["prdtypecode"])
    plan = plan_for(other)
    assert isinstance(plan, WholePipeline)
    proba, features = plan.run(["Livre de cuisine"], [""])
    assert proba.shape == (1, 27) and features[0][:3] == (16, 3, True) and 0 <= features[0][3] <= 1


def test_unknown_pipeline_shape_runs_as_a_whole():
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline

    from tests.serving.factories import sample_frame

    frame = sample_frame()
    other = Pipeline(
        [
            ("vectorize", ColumnTransformer([("d", TfidfVectorizer(), "designation")])),
            ("classify", SGDClassifier(loss="log_loss", max_iter=5, tol=None)),
        ]
    ).fit(frame[["designation", "description"]], frame["prdtypecode"])
    plan = plan_for(other)
    assert isinstance(plan, WholePipeline)
    proba, features = plan.run(["Livre de cuisine"], [""])
    assert proba.shape == (1, 27) and len(features) == 1
