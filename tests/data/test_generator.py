"""The synthetic generator: official layout, determinism, realism, a realistic F1 band, drift knobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.svm import LinearSVC

from rakuten_mlops.data.categories import class_prior
from rakuten_mlops.data.generator import PRIOR_SHIFT_CLASSES, generate_frame
from rakuten_mlops.data.sources import read_source
from tests.support import SAMPLE_DIR


def _text(frame):
    return (frame["designation"] + " " + frame["designation"] + " " + frame["description"]).to_numpy()


def test_output_is_the_official_layout_and_reads_back(generated_source: Path):
    header = (generated_source / "X_train_update.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == ",designation,description,productid,imageid"
    assert (generated_source / "Y_train_CVw08PX.csv").read_text().splitlines()[0] == ",prdtypecode"
    assert len(read_source(generated_source).frame) == 3000


def test_same_seed_same_data_other_seed_other_products():
    a, b, c = generate_frame(500, seed=1), generate_frame(500, seed=1), generate_frame(500, seed=2)
    assert a.equals(b)
    assert not a["designation"].equals(c["designation"])
    assert set(a["productid"]).isdisjoint(c["productid"])


def test_text_looks_like_the_real_catalogue():
    frame = generate_frame(20_000, seed=3)
    empty = (frame["description"] == "").mean()
    assert 0.25 < empty < 0.45  # about a third, as in the official data
    desc = frame["description"]
    assert desc.str.contains("<br />|<p>|<li>", regex=True).mean() > 0.2
    assert desc.str.contains("&#39;|&eacute;", regex=True).any()
    assert frame["designation"].str.contains("¿|Ã©", regex=True).any()  # encoding damage as in the real file
    shares = frame["prdtypecode"].value_counts(normalize=True)
    prior = class_prior()
    assert abs(shares[2583] - prior[2583]) < 0.02  # the largest class keeps its real share
    assert set(shares.index) == set(prior)


def test_a_linear_model_lands_in_a_realistic_band_and_transfers_to_real_rows():
    frame = generate_frame(12_000, seed=5)
    train = np.arange(len(frame)) % 5 != 0
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    model = LinearSVC(C=0.5).fit(vec.fit_transform(_text(frame[train])), frame["prdtypecode"][train])
    pred = model.predict(vec.transform(_text(frame[~train])))
    f1 = f1_score(frame["prdtypecode"][~train], pred, average="weighted")
    assert 0.75 <= f1 <= 0.92, f1
    real = read_source(SAMPLE_DIR).frame
    accuracy = (model.predict(vec.transform(_text(real))) == real["prdtypecode"]).mean()
    assert accuracy > 0.35, accuracy  # sensible on real texts (chance is 1/27)


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_drift_knobs_move_what_they_say(strength: float):
    base = generate_frame(4000, seed=11)
    prior = generate_frame(4000, seed=11, drift="class-prior", drift_strength=strength)
    assert (
        prior["prdtypecode"].isin(PRIOR_SHIFT_CLASSES).mean()
        > base["prdtypecode"].isin(PRIOR_SHIFT_CLASSES).mean() + 0.3
    )
    length = generate_frame(4000, seed=11, drift="length", drift_strength=strength)
    assert length["description"].str.len().mean() > 2 * base["description"].str.len().mean()
    vocab = generate_frame(4000, seed=11, drift="vocabulary", drift_strength=strength)
    base_words = set(" ".join(base["designation"]).lower().split())
    new_words = [w for w in " ".join(vocab["designation"]).lower().split() if w not in base_words]
    assert len(new_words) > 0.1 * len(" ".join(vocab["designation"]).split())
    lang = generate_frame(4000, seed=11, drift="language", drift_strength=strength)
    english = lambda f: f["description"].str.contains("Brand new|Package includes|Lieferumfang").mean()  # noqa: E731
    assert english(lang) > english(base) + 0.2


def test_unknown_drift_kind_is_refused():
    with pytest.raises(ValueError, match="unknown drift kind"):
        generate_frame(10, drift="weather")
