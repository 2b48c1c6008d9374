"""Running the trained pipeline on request batches: the compiled runner and its one fallback.

A prediction needs the class probabilities and the prediction-log features
(:mod:`rakuten_mlops.model.features`), both computed from the cleaned text. For the shape
:func:`~rakuten_mlops.model.pipeline.build_pipeline` makes (``TextPreparer`` -> word n-gram TF-IDF
per column -> :class:`~rakuten_mlops.model.pipeline.SoftmaxLinearClassifier`),
:class:`CompiledLinearPipeline` computes both in one pass from the fitted vocabularies, idf vectors
and coefficients, without the pandas frames and input validation that ``predict_proba`` pays on
every call. :func:`plan_for` uses it only after a self-check on probe products, at load time,
shows it gives the pipeline's probabilities and features; otherwise :class:`WholePipeline` runs
the pipeline itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.compose import ColumnTransformer

from rakuten_mlops.model.features import prediction_features
from rakuten_mlops.model.pipeline import TEXT_COLUMNS, SoftmaxLinearClassifier, TextPreparer, clean_texts

log = logging.getLogger("rakuten_mlops.serving")

PROBE_PRODUCTS = [
    ("Manette sans fil pour Nintendo Switch, noire", "Batterie rechargeable &amp; vibrations <b>HD</b>."),
    ("Piscine tubulaire ronde 366 x 76 cm", ""),
    ("Le Petit Prince - Antoine de Saint-Exupéry", "Livre d'occasion en bon état, édition Folio."),
    ("Lot de 3 figurines Dragon Ball Z", "Figurines en PVC, hauteur 15 cm. Ã©dition limitÃ©e"),
    ("Coussin décoratif velours 45x45", ""),
]

# (text_length, word_count, description_empty, oov_rate) per product: a prediction-log row's features
Features = list[tuple[int, int, bool, float | None]]

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's: maximal runs of 2+ word characters
# the default token pattern's tokens: a scan finds the same maximal runs without testing \b
# before and after each (a failed match at a run of one character resumes at a non-word one)
WORD_RUNS = re.compile(r"\w\w+")
# ASCII texts of a batch are joined with this control character between them (a token of its
# own below; not a word character, so never part of a vocabulary term)
SEPARATOR = "\x01"
JOIN = f" {SEPARATOR} "
_WORD_BYTES = frozenset(b"0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# ASCII in one bytes.translate: lowercase (str.lower() of ASCII), every byte that is not a word
# character (re's \w on ASCII: letters, digits, underscore) to a space, the separator kept; the
# runs of word bytes left are then split() apart
_ASCII_WORDS = bytes(
    b + 32 if 65 <= b <= 90 else b if b in _WORD_BYTES or b == ord(SEPARATOR) else 32 for b in range(256)
)
_SEPARATOR_ID, _SHORT_ID = -2, -3  # ids of the separator and of one-character runs (not tokens)


class WholePipeline:
    """Any classifier pipeline: ``predict_proba`` on a DataFrame, then the features."""

    kind = "whole"

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline

    def run(self, designations: list[str], descriptions: list[str]) -> tuple[np.ndarray, Features]:
        frame = pd.DataFrame({"designation": designations, "description": descriptions})
        proba = np.asarray(self.pipeline.predict_proba(frame))
        try:
            feats = prediction_features(self.pipeline, frame)
        except (KeyError, AttributeError):  # not our pipeline's steps: features without oov_rate
            return proba, [
                (len(d) + len(e), len(f"{d} {e}".split()), not e, None)
                for d, e in zip(designations, descriptions, strict=True)
            ]
        return proba, list(
            zip(
                feats["text_length"].tolist(),
                feats["word_count"].tolist(),
                feats["description_empty"].tolist(),
                feats["oov_rate"].tolist(),
                strict=True,
            )
        )


class CompiledLinearPipeline:
    """Our pipeline shape computed from its fitted arrays (see the module docstring).

    Per product, only what needs Python runs in Python: the repairs of the text cleaning
    (:func:`~rakuten_mlops.model.pipeline.clean_texts`), the tokenizing (one translate and split for
    a batch's ASCII texts, the vectorizer's own preprocessor and tokenizer for the others), and
    one dictionary lookup per token (word -> word id, through ``map``). Everything else is numpy over the whole batch: the n-grams are pairs of adjacent
    word ids looked up in the sorted bigram table, a stable sort counts each (product, feature),
    and the TF-IDF steps of ``TfidfVectorizer.transform`` (float32: sublinear tf, idf, l2 norm per
    column) and the column weights give the CSR matrix the features step would give, with sorted
    indices; the classifier's ``predict_proba`` takes it from there.
    """

    kind = "compiled"

    def __init__(self, pipeline: Any):
        names = [name for name, _ in pipeline.steps]
        if names != ["prepare", "features", "classifier"]:
            raise TypeError(f"pipeline steps {names} are not prepare/features/classifier")
        prepare, features, classifier = (step for _, step in pipeline.steps)
        if type(prepare) is not TextPreparer:
            raise TypeError("prepare step is not a TextPreparer")
        if type(classifier) is not SoftmaxLinearClassifier:
            raise TypeError(f"classifier {type(classifier).__name__} is not a SoftmaxLinearClassifier")
        if not isinstance(features, ColumnTransformer) or features.remainder != "drop":
            raise TypeError("features step is not a ColumnTransformer without remainder")
        columns = [(n, t, c) for n, t, c in features.transformers_ if t != "drop" and n != "remainder"]
        if [c for _, _, c in columns] != list(TEXT_COLUMNS):
            raise TypeError("features are not one vectorizer per designation/description column")
        self.fold_accents = prepare.fold_accents
        weights = features.transformer_weights or {}
        offsets = np.cumsum([0, *(len(t.vocabulary_) for _, t, _ in columns)])
        self.columns = [
            _Column(t, float(weights.get(n, 1.0)), int(offset))
            for (n, t, _), offset in zip(columns, offsets, strict=False)
        ]
        self.classifier = classifier  # its predict_proba is plain arithmetic: softmax(T * (X @ coef.T + b))
        self.n_features = int(offsets[-1])
        if classifier.coef_t().shape[0] != self.n_features:
            raise TypeError(
                f"classifier has {classifier.coef_t().shape[0]} features, vectorizers {self.n_features}"
            )
        first = self.columns[0]
        if any(
            (c.dtype, c.l2, c.sublinear_tf) != (first.dtype, first.l2, first.sublinear_tf)
            for c in self.columns
        ):
            raise TypeError("the column vectorizers differ in dtype, norm or sublinear_tf")
        self.dtype, self.l2, self.sublinear_tf = np.dtype(first.dtype), first.l2, first.sublinear_tf
        if any(c.idf is not None for c in self.columns):
            self.idf = np.concatenate(
                [c.idf if c.idf is not None else np.ones(c.size) for c in self.columns]
            ).astype(self.dtype)
        else:
            self.idf = None
        self.weights = np.asarray([column.weight for column in self.columns], dtype=self.dtype)

    def run(self, designations: list[str], descriptions: list[str]) -> tuple[np.ndarray, Features]:
        matrix, features = self._matrix_and_features(designations, descriptions)
        return np.asarray(self.classifier.predict_proba(matrix)), features

    def matrix(self, designations: list[str], descriptions: list[str]) -> sparse.csr_matrix:
        """The TF-IDF matrix ``run`` gives the classifier for these products (explanations read it):
        the pipeline's features step's, CSR, float32, sorted indices."""
        return self._matrix_and_features(designations, descriptions)[0]

    def _matrix_and_features(self, designations: list[str], descriptions: list[str]) -> tuple[Any, Features]:
        fold, n = self.fold_accents, len(designations)
        des, desc = clean_texts(designations, fold), clean_texts(descriptions, fold)
        keys, words, unknown = [], np.zeros(n, np.int64), np.zeros(n, np.int64)
        for column, texts in zip(self.columns, (des, desc), strict=True):
            column_keys, column_words, column_unknown = column.features(texts, self.n_features)
            keys.append(column_keys)
            words += column_words
            unknown += column_unknown
        key, count = _counted(np.concatenate(keys))
        features = list(
            zip(
                [len(d) + len(e) + (1 if d and e else 0) for d, e in zip(des, desc, strict=True)],
                words.tolist(),
                [not e for e in desc],
                np.divide(unknown, words, out=np.ones(n), where=words > 0).tolist(),
                strict=True,
            )
        )
        return self._matrix(*np.divmod(key, self.n_features), count, n), features

    def _matrix(self, rows: np.ndarray, index: np.ndarray, counts: np.ndarray, n_rows: int) -> Any:
        """The TF-IDF matrix (CSR, float32) from sorted (row, feature, count) entries, as the
        pipeline's features step makes it."""
        data = counts.astype(self.dtype)
        if self.sublinear_tf:
            np.log(data, data)
            data += 1.0
        if self.idf is not None:
            data *= self.idf[index]
        column = (index >= self.columns[1].offset).astype(np.intp)
        segment = rows * 2 + column  # (product, column): the l2 norm and the weight apply to each
        starts = _run_starts(segment)
        if self.l2 and len(starts):  # float32 squares summed in float64, as scikit-learn's row normalisation
            norms = np.sqrt(np.add.reduceat((data * data).astype(np.float64), starts))
            data /= np.repeat(norms, _run_lengths(starts, len(data)))
        data *= self.weights[column]
        indptr = np.zeros(n_rows + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        return sparse.csr_matrix((data, index.astype(np.int32), indptr), shape=(n_rows, self.n_features))


class _Column:
    """One column's vectorizer, reduced to what ``TfidfVectorizer.transform`` uses.

    Its vocabulary is split into words and word pairs: ``word_ids`` numbers every word that is
    a feature or part of one, ``unigram[id]`` is the word's feature (-1 when only part of a
    bigram, and for the id -1 of an unknown word), ``bigram_keys`` (``id1 * n_words + id2``,
    sorted) and ``bigram_features`` the bigrams'.

    With the default token pattern and plain lowercasing, a batch's ASCII texts are tokenized
    together: joined by a separator (a token of its own), translated once (lowercase, every
    non-word character a space) and split, they give exactly their own tokens with one separator
    token between two texts; on ASCII, the runs ``\\w\\w+`` finds are the runs of letters,
    digits and underscores of 2 or more, which is what the split leaves once the one-character
    runs are dropped. The other texts (``\\w`` is Unicode's there) go through ``findall`` one by
    one. When a text holds the separator itself (the separator count tells), every text does.
    """

    def __init__(self, vectorizer: Any, weight: float, offset: int):
        if vectorizer.analyzer != "word" or vectorizer.input != "content" or vectorizer.binary:
            raise TypeError("vectorizer is not a word analyzer on text content")
        if vectorizer.norm not in ("l2", None):
            raise TypeError(f"vectorizer norm {vectorizer.norm!r} is not supported")
        if vectorizer.get_stop_words() or tuple(vectorizer.ngram_range) not in ((1, 1), (1, 2)):
            raise TypeError("only word 1-grams or 1,2-grams without stop words are compiled")
        vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.size, self.offset, self.weight = len(vocabulary), offset, weight
        plain_lowercase = (
            vectorizer.lowercase and not vectorizer.strip_accents and not vectorizer.preprocessor
        )
        self.preprocess = str.lower if plain_lowercase else vectorizer.build_preprocessor()
        self.tokenize = vectorizer.build_tokenizer()
        if vectorizer.tokenizer is None and vectorizer.token_pattern == DEFAULT_TOKEN_PATTERN:
            self.tokenize = WORD_RUNS.findall
        self.joined = (
            plain_lowercase
            and vectorizer.tokenizer is None
            and vectorizer.token_pattern == DEFAULT_TOKEN_PATTERN
            and SEPARATOR not in vocabulary
        )
        self.sublinear_tf = bool(vectorizer.sublinear_tf)
        self.idf = np.asarray(vectorizer.idf_) if vectorizer.use_idf else None
        self.l2 = vectorizer.norm == "l2"
        self.dtype = vectorizer.dtype
        self.word_ids: dict[str, int] = {}
        unigrams, pairs = [], []
        for term, feature in vocabulary.items():
            words = term.split(" ")
            if len(words) > 2:
                raise TypeError(f"vocabulary term {term!r} is not a word or a pair of words")
            ids = [self.word_ids.setdefault(word, len(self.word_ids)) for word in words]
            (unigrams if len(ids) == 1 else pairs).append((*ids, feature + offset))
        self.n_words = len(self.word_ids)
        self.unigram = np.full(self.n_words + 1, -1, dtype=np.int64)  # the last answers id -1
        for word, feature in unigrams:
            self.unigram[word] = feature
        pairs_array = np.asarray(pairs, dtype=np.int64).reshape(-1, 3)
        keys = pairs_array[:, 0] * self.n_words + pairs_array[:, 1]
        order = np.argsort(keys)
        self.bigram_keys, self.bigram_features = keys[order], pairs_array[order, 2]
        # the joined ASCII tokens' ids (bytes): the words, the separator, and the one-character
        # runs the split leaves, which are no token of the default pattern
        self.ascii_ids: dict[bytes, int] = {}
        if self.joined:
            self.ascii_ids = {word.encode(): i for word, i in self.word_ids.items() if word.isascii()}
            self.ascii_ids.update((bytes([b]), _SHORT_ID) for b in _WORD_BYTES)
            self.ascii_ids[SEPARATOR.encode()] = _SEPARATOR_ID

    def features(self, texts: list[str], n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per text: the keys ``row * n_features + feature`` of its n-grams (one per occurrence),
        its token count and its count of tokens that are not a feature (the oov numerator)."""
        n = len(texts)
        ids, row = self._word_ids(texts)
        counts = np.bincount(row, minlength=n)
        unigram = self.unigram[ids]
        known = unigram >= 0
        unknown = counts - np.bincount(row[known], minlength=n)
        keys = [row[known] * n_features + unigram[known]]
        if len(self.bigram_keys) and len(ids) > 1:
            first, second = ids[:-1], ids[1:]
            pair = (first >= 0) & (second >= 0) & (row[:-1] == row[1:])  # never across texts
            key = first[pair] * self.n_words + second[pair]
            at = np.minimum(np.searchsorted(self.bigram_keys, key), len(self.bigram_keys) - 1)
            hit = self.bigram_keys[at] == key
            keys.append(row[:-1][pair][hit] * n_features + self.bigram_features[at[hit]])
        return np.concatenate(keys), counts, unknown

    def _word_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The word id of every token of the texts (-1: not a known word) and the text (row) it
        belongs to; a text's tokens are adjacent and in order, the texts may come in any order.

        In joined mode the ASCII texts of a batch are tokenized together by :data:`_ASCII_WORDS`
        (one translate and one split), the others one by one; when a text holds the separator
        itself (the separator count tells), every text is tokenized one by one, as is a single one.
        """
        if self.joined and len(texts) > 1:
            plain = [text if text.isascii() else "" for text in texts]
            joined = JOIN.join(plain)
            if joined.count(SEPARATOR) == len(texts) - 1:
                tokens = joined.encode("ascii").translate(_ASCII_WORDS).split()
                ids = np.fromiter(map(self.ascii_ids.get, tokens, repeat(-1)), np.int64, len(tokens))
                row = np.cumsum(ids == _SEPARATOR_ID)
                kept = ids >= -1
                ids, row = ids[kept], row[kept]
                others = [i for i, text in enumerate(texts) if text and not plain[i]]
                if not others:
                    return ids, row
                more_ids, more_rows = self._word_ids_each([texts[i] for i in others], others)
                return np.concatenate([ids, more_ids]), np.concatenate([row, more_rows])
        return self._word_ids_each(texts, range(len(texts)))

    def _word_ids_each(self, texts: list[str], rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``_word_ids`` of texts tokenized one by one (``rows``: their row numbers)."""
        get, preprocess, tokenize = self.word_ids.get, self.preprocess, self.tokenize
        ids: list[int] = []
        lengths: list[int] = []
        for text in texts:
            before = len(ids)
            if text:
                ids.extend(map(get, tokenize(preprocess(text)), repeat(-1)))
            lengths.append(len(ids) - before)
        return np.array(ids, dtype=np.int64), np.repeat(np.asarray(rows, dtype=np.int64), lengths)


Runner = WholePipeline | CompiledLinearPipeline


def plan_for(pipeline: Any) -> Runner:
    """The compiled runner when it fits the pipeline and agrees with it on probe products, else the whole."""
    whole = WholePipeline(pipeline)
    try:
        compiled = CompiledLinearPipeline(pipeline)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        log.info("running the pipeline as a whole: %s", exc)
        return whole
    designations, descriptions = [d for d, _ in PROBE_PRODUCTS], [e for _, e in PROBE_PRODUCTS]
    try:
        if same_output(compiled.run(designations, descriptions), whole.run(designations, descriptions)):
            return compiled
        log.warning(
            "the compiled runner's output differs from the pipeline's: running the pipeline as a whole"
        )
    except Exception as exc:
        log.warning("the compiled runner failed on probe products, running the pipeline as a whole: %s", exc)
    return whole


def same_output(got: tuple[np.ndarray, Features], expected: tuple[np.ndarray, Features]) -> bool:
    """Same probabilities and classes ranking, and the same prediction-log features.

    Probabilities agree to float32 precision: the pipeline computes decision values in float32
    (the TF-IDF matrix and the coefficients are float32), the compiled runner sums in float64;
    a wrong weight or a missing n-gram moves probabilities far more than the tolerance.
    """
    (proba, features), (want_proba, want_features) = got, expected
    if proba.shape != want_proba.shape or not np.allclose(proba, want_proba, rtol=1e-4, atol=1e-8):
        return False
    if not np.array_equal(proba.argmax(axis=1), want_proba.argmax(axis=1)):
        return False
    if [f[:3] for f in features] != [f[:3] for f in want_features]:
        return False
    return all(
        abs(a - b) < 1e-9
        for a, b in zip([f[3] for f in features], [f[3] for f in want_features], strict=True)
    )


def _counted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_counts=True)``, by a stable sort: the keys come in runs already
    sorted (rows in order), which the stable sort (timsort) merges instead of sorting anew."""
    keys = np.sort(keys, kind="stable")
    if not len(keys):
        return keys, np.zeros(0, dtype=np.int64)
    starts = _run_starts(keys)
    return keys[starts], _run_lengths(starts, len(keys))


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values begins (without ``np.r_``, whose indexing machinery
    costs more than the rest for a single product)."""
    if not len(values):
        return np.zeros(0, dtype=np.intp)
    new = np.empty(len(values), dtype=bool)
    new[0] = True
    np.not_equal(values[1:], values[:-1], out=new[1:])
    return np.flatnonzero(new)


def _run_lengths(starts: np.ndarray, total: int) -> np.ndarray:
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    if len(ends):
        ends[-1] = total
    return ends - starts


def top_k(proba: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the ``k`` most probable classes per row (best first, ties by class order)
    and their probabilities; ``k`` is clamped to 1..number of classes."""
    k = max(1, min(k, proba.shape[1]))
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(proba, top, axis=1)
