"""The compiled runner builds the pipeline's own TF-IDF matrix, bit for bit, whatever the texts.

It tokenizes a batch's ASCII texts in one pass (joined by a separator) and the others one by one,
and counts n-grams with a stable sort; these tests hold it to the pipeline's features step exactly
(same CSR indices and float32 values), so the probabilities are the pipeline's exactly too,
including for texts that contain the separator (every text tokenized one by one then) and
batches of one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.model.pipeline import clean_text
from rakuten_mlops.model.runner import SEPARATOR, CompiledLinearPipeline, WholePipeline
from tests.serving.factories import fit_pipeline, sample_frame

AWKWARD = [
    ("!!!", ""),
    (f"titre {SEPARATOR} milieu", f"{SEPARATOR}"),  # the separator word inside a text
    (f"{SEPARATOR}x collé", f"a {SEPARATOR}{SEPARATOR} b"),
    ("ΟΔΟΣ ΑΣ", "İstanbul Σ"),  # lower() that depends on context or changes length
    ("Ã©dition limitÃ©e &amp; <b>collector</b>", "Ã  prix rÃ©duit"),
    ("a", "b"),
    ("  espaces \t multiples\n", "\x00 nul"),
]


@pytest.fixture(scope="module")
def pipeline():
    return fit_pipeline(0)


def _batch(with_awkward: bool) -> tuple[list[str], list[str]]:
    frame = sample_frame()
    designations = frame["designation"].tolist()
    descriptions = frame["description"].fillna("").tolist()
    if with_awkward:
        designations += [d for d, _ in AWKWARD]
        descriptions += [e for _, e in AWKWARD]
    return designations, descriptions


def _counting(tokenize, calls: list):
    def counted(text):
        calls.append(text)
        return tokenize(text)

    return counted


def _pipeline_matrix(pipeline, designations, descriptions):
    frame = pd.DataFrame({"designation": designations, "description": descriptions})
    prepared = pipeline.named_steps["prepare"].transform(frame)
    return pipeline.named_steps["features"].transform(prepared).tocsr()


@pytest.mark.parametrize("with_awkward", [False, True], ids=["joined", "one-by-one"])
def test_matrix_and_probabilities_are_the_pipelines_exactly(pipeline, with_awkward):
    designations, descriptions = _batch(with_awkward)
    compiled = CompiledLinearPipeline(pipeline)
    calls = []
    for column in compiled.columns:
        column.tokenize = _counting(column.tokenize, calls)
    matrix = compiled.matrix(designations, descriptions)
    # the ASCII texts of a column in one pass, the others one call each; with the separator in a
    # text of each column, one call per non-empty text
    cleaned = [clean_text(text) for text in designations + descriptions]
    one_by_one = [text for text in cleaned if text and (with_awkward or not text.isascii())]
    assert len(calls) == len(one_by_one)
    assert with_awkward or len(one_by_one) < len(cleaned) / 2
    expected = _pipeline_matrix(pipeline, designations, descriptions)
    assert matrix.dtype == expected.dtype
    np.testing.assert_array_equal(matrix.indptr, expected.indptr)
    np.testing.assert_array_equal(matrix.indices, expected.indices)
    np.testing.assert_array_equal(matrix.data, expected.data)
    proba, features = compiled.run(designations, descriptions)
    want_proba, want_features = WholePipeline(pipeline).run(designations, descriptions)
    np.testing.assert_array_equal(proba, want_proba)
    assert features == want_features


def test_each_awkward_product_alone_is_scored_as_in_a_batch(pipeline):
    compiled = CompiledLinearPipeline(pipeline)
    designations, descriptions = _batch(True)
    proba, features = compiled.run(designations, descriptions)
    first = len(designations) - len(AWKWARD)
    for i in range(first, len(designations)):
        alone, alone_features = compiled.run([designations[i]], [descriptions[i]])
        np.testing.assert_array_equal(alone[0], proba[i])
        assert alone_features[0] == features[i]


def test_word_runs_are_the_default_token_pattern_s_tokens():
    """The runner scans ``\\w\\w+`` for scikit-learn's ``(?u)\\b\\w\\w+\\b``: the same tokens on
    every kind of character (letters, digits of other scripts, marks, underscores, symbols)."""
    import random
    import re

    from rakuten_mlops.model.runner import DEFAULT_TOKEN_PATTERN, WORD_RUNS

    alphabet = list("aZé_0 '-.,\t\n") + ["\u0301", "\u0663", "\u00b2", "\u00bd", "\u4e2d", "\U0001f600",
                                          "\u2d63", "\u00a0", "\u0130", "\u00df", "\u02b0"]  # fmt: skip
    rng = random.Random(11)
    texts = ["", "a", "ab", "a b", "_", "__", "l'été 2x3", "e\u0301te\u0301", "\u0663\u0664 x\u00b2y"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(3000)]
    default = re.compile(DEFAULT_TOKEN_PATTERN)
    for text in texts:
        assert WORD_RUNS.findall(text) == default.findall(text), repr(text)


def test_ascii_texts_joined_give_the_default_token_pattern_s_tokens(pipeline):
    """The joined ASCII pass (one translate and split for the batch) gives each text the tokens
    ``(?u)\\b\\w\\w+\\b`` finds in its lowercased text, in order: on every ASCII character,
    texts of one character, empty texts, and one-character runs between tokens."""
    import random
    import re

    from rakuten_mlops.model.runner import DEFAULT_TOKEN_PATTERN

    rng = random.Random(5)
    alphabet = [chr(c) for c in range(128) if chr(c) != SEPARATOR] + ["ab", "Zz", "_x"]
    texts = ["", "a", "ab", "A b C", "x_1 y-2", "__", "\x00 nul", "l'ete 2x3"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(2000)]
    column = CompiledLinearPipeline(pipeline).columns[0]
    words = [word for word in column.word_ids if word.isascii()]
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))).upper() for _ in range(200)]
    ids, rows = column._word_ids(texts)
    assert np.all(np.diff(rows) >= 0)  # all ASCII: one pass, rows in order
    default = re.compile(DEFAULT_TOKEN_PATTERN)
    for i, text in enumerate(texts):
        expected = [column.word_ids.get(token, -1) for token in default.findall(text.lower())]
        assert ids[rows == i].tolist() == expected, repr(text)
    assert np.count_nonzero(ids >= 0) > 200  # known words were looked up, not only unknown ones


def test_a_batch_is_cleaned_as_each_text_alone():
    """``clean_texts`` (the runner's: folding and whitespace over the batch joined) gives every
    field ``clean_text``'s result: accents (one folding into another), entities, tags, mojibake,
    every kind of whitespace, the separator inside a text, empty and missing fields."""
    import random

    from rakuten_mlops.model.pipeline import clean_texts

    pieces = ["a", "Zé", "Ǣ", "Æ", "œuf", "ß", "&amp;", "&amp;eacute;", "<b>", "</p>", "Ã©", "â€™", "\x00",
              " ", "  ", "\t", "\n", "\u00a0", "\u3000", "\x1c", "\u2028", "°", "中", "x"]  # fmt: skip
    rng = random.Random(3)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    for fold in (True, False):
        values = [text for text in texts if "\x00" not in text] + ["", " ", None, float("nan"), 12]
        assert clean_texts(values, fold) == [clean_text(value, fold) for value in values]
        assert clean_texts(texts, fold) == [clean_text(text, fold) for text in texts]  # one by one
        accents = [text for text in values if isinstance(text, str) and "Ǣ" not in text]
        assert clean_texts(accents, fold) == [clean_text(text, fold) for text in accents]
    assert clean_texts([]) == []
