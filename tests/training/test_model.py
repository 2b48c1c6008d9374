"""The classifier pipeline and its monitoring features, on real catalogue rows and generated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.model import build_pipeline, clean_text, prediction_features
from rakuten_mlops.model.pipeline import trusted_types
from tests.support import SAMPLE_DIR  # real rows (README)

SAMPLE = pd.read_csv(SAMPLE_DIR / "X_sample.csv", index_col=0)
LABELS = pd.read_csv(SAMPLE_DIR / "Y_sample.csv", index_col=0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Cr&egrave;me br&ucirc;l&eacute;e &amp; caf&#39;", "Creme brulee & caf'"),
        ("<p>Bâche <b>hiver</b></p><br />pour  piscine\n\n 450 cm", "Bache hiver pour piscine 450 cm"),
        ("T-shirt cafÃ© Ã©tÃ©", "T-shirt cafe ete"),  # UTF-8 read as Latin-1, repaired by ftfy
        ("&lt;br /&gt;texte&amp;eacute;", "textee"),  # escaped tag, double-escaped entity
        (float("nan"), ""),
        (None, ""),
    ],
    ids=["entities", "tags-whitespace", "mojibake", "escaped-tags", "nan", "none"],
)
def test_clean_text_repairs_catalogue_text(raw, expected):
    assert clean_text(raw) == expected


def test_clean_text_keeps_lost_characters_as_separators():
    # "c¿ur": the official file lost the "œ" itself; no library can restore it, the word is split.
    assert clean_text("mettre en ¿uvre le c¿ur") == "mettre en ¿uvre le c¿ur"
    assert "crÃ¿me" not in clean_text("the crÃ¿me colored stitching")


@pytest.fixture(scope="module")
def sample_pipeline():
    return build_pipeline("sgd").fit(SAMPLE[["designation", "description"]], LABELS["prdtypecode"].to_numpy())


def test_pipeline_on_real_rows_predicts_prdtypecodes_with_a_probability_per_class(sample_pipeline):
    codes = sorted(LABELS["prdtypecode"].unique())
    assert list(sample_pipeline.classes_) == codes and len(codes) == 27
    proba = sample_pipeline.predict_proba(SAMPLE.head(50))
    assert proba.shape == (50, 27)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba > 0).all()
    predicted = sample_pipeline.predict(SAMPLE.head(50))
    np.testing.assert_array_equal(predicted, sample_pipeline.classes_[proba.argmax(axis=1)])
    assert set(predicted) <= set(codes)


def test_pipeline_accepts_missing_or_null_descriptions(sample_pipeline):
    only_title = pd.DataFrame({"designation": ["Piscine tubulaire ronde 366 cm"]})
    null_desc = pd.DataFrame({"designation": ["Piscine tubulaire ronde 366 cm"], "description": [None]})
    np.testing.assert_allclose(
        sample_pipeline.predict_proba(only_title), sample_pipeline.predict_proba(null_desc)
    )
    with pytest.raises(ValueError, match="designation"):
        sample_pipeline.predict(pd.DataFrame({"description": ["x"]}))


def test_pipeline_survives_mlflow_skops_round_trip(sample_pipeline, tmp_path):
    import mlflow.sklearn

    from rakuten_mlops.model.loading import load_pipeline

    mlflow.sklearn.save_model(sample_pipeline, tmp_path / "m", skops_trusted_types=trusted_types())
    assert (tmp_path / "m" / "model.skops").exists()
    loaded = load_pipeline(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.predict_proba(SAMPLE), sample_pipeline.predict_proba(SAMPLE))
    # the fitted vocabulary is intact on both sides (the save must not strip the live object)
    assert sample_pipeline.named_steps["features"].named_transformers_["designation"].vocabulary_


@pytest.fixture(scope="module")
def generated_split():
    from rakuten_mlops.data.generator import generate_frame

    frame = generate_frame(6000, 11)
    return frame.iloc[:4800], frame.iloc[4800:]


@pytest.mark.parametrize("model", ["sgd", "logreg"])
def test_confidence_matches_accuracy_on_unseen_rows(generated_split, model):
    """A 0.8 confidence should mean right about 80 % of the time (softmax temperature fitted)."""
    train, test = generated_split
    pipeline = build_pipeline(model).fit(train, train["prdtypecode"])
    proba = pipeline.predict_proba(test)
    accuracy = float((pipeline.classes_[proba.argmax(axis=1)] == test["prdtypecode"].to_numpy()).mean())
    confidence = float(proba.max(axis=1).mean())
    assert accuracy > 0.7
    assert abs(confidence - accuracy) < 0.12, (model, confidence, accuracy)


def test_prediction_features_definitions(sample_pipeline):
    frame = pd.DataFrame(
        {
            "designation": ["Peluche Donald", "zzqx wvkj", ""],
            "description": ["<p>Peluche &amp; marionnette</p>", None, ""],
        }
    )
    features = prediction_features(sample_pipeline, frame)
    assert list(features.columns) == ["text_length", "word_count", "description_empty", "oov_rate"]
    assert features["text_length"].tolist() == [
        len("Peluche Donald Peluche & marionnette"),
        len("zzqx wvkj"),
        0,
    ]
    assert features["word_count"].tolist() == [4, 2, 0]
    assert features["description_empty"].tolist() == [False, True, True]
    assert features.loc[1, "oov_rate"] == 1.0  # invented words
    assert features.loc[2, "oov_rate"] == 1.0  # nothing the model knows
    assert 0.0 <= features.loc[0, "oov_rate"] < 1.0


def test_prediction_features_are_the_same_in_bulk_and_per_request(sample_pipeline):
    """The drift reference (whole training set at once) and the API (small batches) agree."""
    bulk = prediction_features(sample_pipeline, SAMPLE)
    pieces = pd.concat(
        [prediction_features(sample_pipeline, SAMPLE.iloc[i : i + 7]) for i in range(0, len(SAMPLE), 7)]
    )
    pd.testing.assert_frame_equal(bulk, pieces)
    assert bulk["description_empty"].sum() == 146  # the README's count of empty descriptions
    assert bulk.loc[bulk["description_empty"], "oov_rate"].between(0, 1).all()
