"""Running the registered pipeline on request batches, with its text cleaning done once.

The prediction and the prediction-log features both need the cleaned text. Calling
``pipeline.predict_proba`` and then ``prediction_features`` would clean every text twice and
pay pandas/scikit-learn validation overhead on each call (measured with scikit-learn 1.9:
3.9 ms for one product, 7 ms for 16, most of it input validation, not arithmetic). Three
runners, the fastest one that fits is picked at load time (:func:`plan_for`):

- :class:`CompiledLinearPipeline`: our pipeline shape (``TextPreparer`` -> word n-gram TF-IDF
  per column -> :class:`~rakuten_mlops.model.pipeline.SoftmaxLinearClassifier`) computed with
  the fitted vocabularies, idf vectors and coefficients directly: the vectorizers' own
  tokenizer and n-gram code, the same float32 TF-IDF arithmetic, one sparse product per column,
  and the prediction-log features from the same tokens. No pandas, no validation.
- :class:`StepwisePipeline`: the fitted steps called one by one (any per-column vectorizers
  and any classifier), cleaned text shared with the features.
- :class:`WholePipeline`: ``pipeline.predict_proba`` on a DataFrame, for any other shape.

A faster runner is only used after a self-check at load time shows it gives the same
probabilities and features as the whole pipeline on probe products.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.serving.features import prediction_features

log = logging.getLogger("rakuten_mlops.serving")

PROBE_PRODUCTS = [
    ("Manette sans fil pour Nintendo Switch, noire", "Batterie rechargeable &amp; vibrations <b>HD</b>."),
    ("Piscine tubulaire ronde 366 x 76 cm", ""),
    ("Le Petit Prince - Antoine de Saint-Exupéry", "Livre d'occasion en bon état, édition Folio."),
    ("Lot de 3 figurines Dragon Ball Z", "Figurines en PVC, hauteur 15 cm. Ã©dition limitÃ©e"),
    ("Coussin décoratif velours 45x45", None),
]

Features = list[tuple[int, int, bool, float | None]]


class WholePipeline:
    """Any classifier pipeline: ``predict_proba`` on a DataFrame, features computed separately."""

    kind = "whole"

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline

    def run(self, designations: list[str], descriptions: list[str]) -> tuple[np.ndarray, Features]:
        frame = pd.DataFrame({"designation": designations, "description": descriptions})
        proba = np.asarray(self.pipeline.predict_proba(frame))
        return proba, prediction_features(self.pipeline, frame)


class _Prepared:
    """Stands in for the pipeline inside ``prediction_features``: its ``prepare`` step is already done."""

    def __init__(self, pipeline: Any, cleaned: pd.DataFrame):
        self.named_steps = dict(pipeline.named_steps)
        self.named_steps["prepare"] = _AlreadyCleaned(cleaned)
        self.steps = pipeline.steps


class _AlreadyCleaned:
    def __init__(self, cleaned: pd.DataFrame):
        self.cleaned = cleaned

    def transform(self, _frame: Any) -> pd.DataFrame:
        return self.cleaned


class StepwisePipeline:
    """``prepare`` -> ColumnTransformer of per-column vectorizers -> classifier, run step by step."""

    kind = "stepwise"

    def __init__(self, pipeline: Any):
        from scipy import sparse
        from sklearn.compose import ColumnTransformer

        self.pipeline = pipeline
        self._sparse = sparse
        names = [name for name, _ in pipeline.steps]
        if names[:2] != ["prepare", "features"] or len(names) != 3:
            raise TypeError(f"pipeline steps {names} are not prepare/features/classifier")
        self.prepare = pipeline.named_steps["prepare"]
        features = pipeline.named_steps["features"]
        if not isinstance(features, ColumnTransformer) or features.remainder != "drop":
            raise TypeError("features step is not a ColumnTransformer without remainder")
        weights = features.transformer_weights or {}
        self.columns: list[tuple[str, Any, float]] = []
        for name, transformer, column in features.transformers_:
            if transformer == "drop" or name == "remainder":
                continue
            if not isinstance(column, str) or not hasattr(transformer, "transform"):
                raise TypeError(f"transformer {name!r} is not a single-column vectorizer")
            self.columns.append((column, transformer, float(weights.get(name, 1.0))))
        self.classifier = pipeline.steps[-1][1]
        self._clean = _fast_cleaner(self.prepare)

    def clean(self, designations: list[str], descriptions: list[str]) -> pd.DataFrame:
        if self._clean is not None:
            return pd.DataFrame(
                {
                    "designation": [self._clean(v) for v in designations],
                    "description": [self._clean(v) for v in descriptions],
                }
            )
        frame = pd.DataFrame({"designation": designations, "description": descriptions})
        return self.prepare.transform(frame).reset_index(drop=True)

    def run(self, designations: list[str], descriptions: list[str]) -> tuple[np.ndarray, Features]:
        cleaned = self.clean(designations, descriptions)
        blocks = []
        for column, vectorizer, weight in self.columns:
            block = vectorizer.transform(cleaned[column].tolist())
            blocks.append(block * weight if weight != 1.0 else block)
        matrix = self._sparse.hstack(blocks, format="csr")
        proba = np.asarray(self.classifier.predict_proba(matrix))
        frame = pd.DataFrame({"designation": designations, "description": descriptions})
        return proba, prediction_features(_Prepared(self.pipeline, cleaned), frame)


class CompiledLinearPipeline:
    """Our pipeline shape computed from its fitted arrays (see the module docstring).

    One pass over the products collects, for each (product, column) segment, the vocabulary
    indices and counts of its n-grams (the vectorizer's own tokenizer and n-gram code) and the
    token counts for the features; then a handful of numpy operations over all segments at
    once apply what ``TfidfVectorizer.transform`` does (float32: sublinear tf, idf, l2 norm per
    segment) and the column weights, giving the CSR matrix the features step would give; the
    classifier's ``predict_proba`` takes it from there.
    """

    kind = "compiled"

    def __init__(self, pipeline: Any):
        from scipy import sparse

        from rakuten_mlops.model.pipeline import SoftmaxLinearClassifier

        stepwise = StepwisePipeline(pipeline)  # the shape checks: prepare/features/classifier
        self._clean = stepwise._clean
        if self._clean is None:
            raise TypeError("prepare step is not the training package's TextPreparer")
        classifier = stepwise.classifier
        if type(classifier) is not SoftmaxLinearClassifier:
            raise TypeError(f"classifier {type(classifier).__name__} is not a SoftmaxLinearClassifier")
        if [c for c, _, _ in stepwise.columns] != ["designation", "description"]:
            raise TypeError("features are not one vectorizer per designation/description column")
        self.coef_t = _contiguous_coef_t(classifier)
        if self.coef_t.ndim != 2 or self.coef_t.shape[1] < 2:
            raise TypeError("classifier is not multiclass")
        self.classifier = classifier  # its predict_proba is plain arithmetic: softmax(T * (X @ coef.T + b))
        self._csr = sparse.csr_matrix
        self.n_features = self.coef_t.shape[0]
        self.columns = [_Column(vectorizer, weight) for _, vectorizer, weight in stepwise.columns]
        dtypes = {np.dtype(column.dtype) for column in self.columns}
        if len(dtypes) != 1 or any(column.l2 != self.columns[0].l2 for column in self.columns):
            raise TypeError("the column vectorizers differ in dtype or norm")
        self.dtype = dtypes.pop()
        self.l2 = self.columns[0].l2
        self.sublinear_tf = self.columns[0].sublinear_tf
        if any(column.sublinear_tf != self.sublinear_tf for column in self.columns):
            raise TypeError("the column vectorizers differ in sublinear_tf")
        sizes = [len(column.vocabulary) for column in self.columns]
        if sum(sizes) != self.coef_t.shape[0]:
            raise TypeError(f"classifier has {self.coef_t.shape[0]} features, the vectorizers {sum(sizes)}")
        self.offsets = [int(o) for o in np.cumsum([0, *sizes[:-1]])]
        idfs = [c.idf if c.idf is not None else np.ones(n) for c, n in zip(self.columns, sizes, strict=True)]
        self.idf = (
            np.concatenate(idfs).astype(idfs[0].dtype)
            if any(c.idf is not None for c in self.columns)
            else None
        )
        self.weights = np.asarray([column.weight for column in self.columns])

    def run(self, designations: list[str], descriptions: list[str]) -> tuple[np.ndarray, Features]:
        clean = self._clean
        (des_col, desc_col), (des_offset, desc_offset) = self.columns, self.offsets
        indices: list[int] = []
        counts: list[int] = []
        lengths: list[int] = []  # entries per (product, column) segment, product-major
        features: Features = []
        for designation, description in zip(designations, descriptions, strict=True):
            des, desc = clean(designation), clean(description)
            words_des, unknown_des = des_col.count(des, des_offset, indices, counts, lengths)
            words_desc, unknown_desc = desc_col.count(desc, desc_offset, indices, counts, lengths)
            words = words_des + words_desc
            features.append(
                (
                    len(des) + len(desc) + (1 if des and desc else 0),
                    words,
                    not desc,
                    (unknown_des + unknown_desc) / words if words else 1.0,
                )
            )
        matrix = self._matrix(indices, counts, lengths, len(features))
        return np.asarray(self.classifier.predict_proba(matrix)), features

    def _matrix(self, indices: list[int], counts: list[int], lengths: list[int], n_rows: int) -> Any:
        """The TF-IDF matrix (CSR, float32) of the products, as the pipeline's features step makes it."""
        index = np.asarray(indices, dtype=np.int32)
        data = np.asarray(counts, dtype=self.dtype)
        if self.sublinear_tf:
            np.log(data, data)
            data += 1.0
        if self.idf is not None:
            data *= self.idf[index]
        length = np.asarray(lengths, dtype=np.intp)
        filled = np.flatnonzero(length)
        if self.l2 and len(filled):  # float32 squares summed in float64, as scikit-learn's row normalisation
            starts = np.cumsum(length) - length
            norms = np.sqrt(np.add.reduceat((data * data).astype(np.float64), starts[filled]))
            data /= np.repeat(norms, length[filled])
        data *= np.repeat(np.tile(self.weights, n_rows)[filled], length[filled]).astype(data.dtype)
        indptr = np.zeros(n_rows + 1, dtype=np.int32)
        np.cumsum(length.reshape(n_rows, len(self.columns)).sum(axis=1), out=indptr[1:])
        matrix = self._csr((data, index, indptr), shape=(n_rows, self.n_features))
        matrix.sort_indices()  # the column order of scikit-learn's matrix: the same sums
        return matrix


class _Column:
    """One column's vectorizer, reduced to what ``TfidfVectorizer.transform`` uses."""

    def __init__(self, vectorizer: Any, weight: float):
        if vectorizer.analyzer != "word" or vectorizer.input != "content" or vectorizer.binary:
            raise TypeError("vectorizer is not a word analyzer on text content")
        if vectorizer.norm not in ("l2", None):
            raise TypeError(f"vectorizer norm {vectorizer.norm!r} is not supported")
        self.vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.preprocess = vectorizer.build_preprocessor()
        self.tokenize = vectorizer.build_tokenizer()
        stop_words = vectorizer.get_stop_words()
        self.stop_words = frozenset(stop_words) if stop_words else None
        self.ngrams = vectorizer._word_ngrams  # what the vectorizer's own analyzer calls
        self.sublinear_tf = bool(vectorizer.sublinear_tf)
        self.idf = np.asarray(vectorizer.idf_) if vectorizer.use_idf else None
        self.l2 = vectorizer.norm == "l2"
        self.dtype = vectorizer.dtype
        self.weight = weight

    def count(
        self, text: str, offset: int, indices: list[int], counts: list[int], lengths: list[int]
    ) -> tuple[int, int]:
        """Append this text's n-gram indices (+ offset) and counts; return (tokens, unknown tokens)."""
        if not text:
            lengths.append(0)
            return 0, 0
        vocabulary = self.vocabulary
        tokens = self.tokenize(self.preprocess(text))
        unknown = 0
        for token in tokens:
            if token not in vocabulary:
                unknown += 1
        counter: dict[int, int] = {}
        get = vocabulary.get
        for feature in self.ngrams(tokens, self.stop_words):
            index = get(feature)
            if index is not None:
                counter[index] = counter.get(index, 0) + 1
        indices.extend([index + offset for index in counter] if offset else counter)
        counts.extend(counter.values())
        lengths.append(len(counter))
        return len(tokens), unknown


def _contiguous_coef_t(classifier: Any) -> np.ndarray:
    """``coef_.T`` as a C-contiguous array, shared with the classifier's own cache (one copy in memory)."""
    coef_t = classifier.__dict__.get("_coef_t")
    if coef_t is None:
        coef_t = classifier._coef_t = np.ascontiguousarray(classifier.estimator_.coef_.T)
    return coef_t


def _fast_cleaner(prepare: Any):
    """The per-string cleaning function of the training package's ``TextPreparer``, if it is one."""
    try:
        from rakuten_mlops.model.pipeline import TextPreparer, clean_text
    except ImportError:
        return None
    if type(prepare) is not TextPreparer:
        return None
    fold = prepare.fold_accents
    return lambda value: clean_text(value, fold)


Runner = WholePipeline | StepwisePipeline | CompiledLinearPipeline


def plan_for(pipeline: Any) -> Runner:
    """The fastest runner that gives the pipeline's probabilities and features on probe products."""
    whole = WholePipeline(pipeline)
    designations = [d for d, _ in PROBE_PRODUCTS]
    descriptions = [e or "" for _, e in PROBE_PRODUCTS]
    expected = None
    for kind in (CompiledLinearPipeline, StepwisePipeline):
        try:
            runner = kind(pipeline)
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            log.info("not using the %s runner: %s", kind.kind, exc)
            continue
        try:
            if expected is None:
                expected = whole.run(designations, descriptions)
            if same_output(runner.run(designations, descriptions), expected):
                return runner
            log.warning("the %s runner's output differs from the pipeline's: not using it", kind.kind)
        except Exception as exc:
            log.warning("the %s runner failed on probe products, not using it: %s", kind.kind, exc)
    log.info("running the pipeline as a whole")
    return whole


def same_output(got: tuple[np.ndarray, Features], expected: tuple[np.ndarray, Features]) -> bool:
    """Same probabilities and classes ranking, and the same prediction-log features.

    Probabilities agree to float32 precision: the pipeline computes decision values in float32
    (the TF-IDF matrix and the coefficients are float32), the compiled runner sums in float64;
    measured relative differences reach 1e-5, a wrong weight or a missing n-gram moves
    probabilities by 1e-2 and more.
    """
    (proba, features), (want_proba, want_features) = got, expected
    if proba.shape != want_proba.shape or not np.allclose(proba, want_proba, rtol=1e-4, atol=1e-8):
        return False
    if not np.array_equal(proba.argmax(axis=1), want_proba.argmax(axis=1)):
        return False
    if [f[:3] for f in features] != [f[:3] for f in want_features]:
        return False
    oov, want_oov = [f[3] for f in features], [f[3] for f in want_features]
    return all(
        (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-9)
        for a, b in zip(oov, want_oov, strict=True)
    )
