"""The product classifier: ONE scikit-learn ``Pipeline`` from raw catalogue text to ``prdtypecode``.

Input: a pandas DataFrame with string columns ``designation`` and ``description`` (missing or
NaN descriptions are treated as empty). Output: ``classes_`` are the ``prdtypecode`` integers.

Steps (all inside the pipeline, so serving reuses exactly the training preprocessing):

1. ``prepare`` (:class:`TextPreparer`): repair mojibake with ftfy (only on strings that show
   its symptoms, which keeps a whole catalogue fast), decode HTML entities, strip tags, fold accents,
   collapse whitespace.
2. ``features``: word (1, 2)-gram TF-IDF, one vectorizer per column; the designation is
   weighted above the description (``DESIGNATION_WEIGHT`` vs ``DESCRIPTION_WEIGHT``).
3. ``classifier`` (:class:`SoftmaxLinearClassifier`): a linear model. ``predict_proba`` gives
   a confidence for every class = **softmax-normalised decision values**. For ``sgd`` the
   softmax temperature is fitted (log-loss) on a 10 % held-out part of the training data,
   then the model is refitted on all of it; ``logreg`` is multinomial logistic regression,
   whose probabilities are already the softmax of its decision values (temperature 1).

Everything here is a module-level function or class so MLflow can save it with skops.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline

TEXT_COLUMNS = ("designation", "description")
MODEL_KINDS = ("sgd", "logreg")
DESIGNATION_WEIGHT = 1.0
DESCRIPTION_WEIGHT = 0.5

_TAG_RE = re.compile(r"<[^>]*>")
# Symptoms of UTF-8 read as Latin-1/cp1252 ("Ã©", "Ã¿", "â€™", "Â "): a lead byte followed by a
# continuation byte. Only strings that match go through ftfy, which is slow.
_MOJIBAKE_RE = re.compile(
    "[\u00c2\u00c3\u00c5\u00c6\u00ce\u00cf\u00d0\u00d1\u00e2\u00ef]"
    "[\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)


def _accent_folding_table() -> dict[str, str]:
    """Accented Latin letters -> their base letters (from Unicode decompositions), used instead
    of scikit-learn's per-character ``strip_accents='unicode'``."""
    table: dict[str, str] = {}
    for code in range(0x00C0, 0x0250):
        char = chr(code)
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        if base and base != char:
            table[char] = base
    table.update({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss"})
    return table


_FOLD_ACCENTS = _accent_folding_table()
# One regex scan finds the letters to fold; ``str.translate`` would look up every character of
# a non-ASCII text in the table, while a text holds only a few accented letters.
_ACCENTED_RE = re.compile("[" + re.escape("".join(_FOLD_ACCENTS)) + "]")


def fold_accented_letters(text: str) -> str:
    """``text`` with every accented Latin letter replaced by its base letter(s)."""
    return _ACCENTED_RE.sub(lambda match: _FOLD_ACCENTS[match.group()], text)


def clean_text(value: Any, fold_accents: bool = True) -> str:
    """Readable plain text from one raw catalogue field (HTML, entities, mojibake, NaN)."""
    text = _repaired(value)
    if fold_accents and not text.isascii():
        text = fold_accented_letters(text)
    return " ".join(text.split())  # split() and re's \s agree on what whitespace is


def _repaired(value: Any) -> str:
    """The text of a raw field with mojibake repaired, entities decoded and tags stripped."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value)
    if not text:
        return ""
    # str.isascii() is O(1) (CPython keeps the flag): mojibake and accents are never ASCII
    if not text.isascii() and _MOJIBAKE_RE.search(text):
        import ftfy

        text = ftfy.fix_text(text, unescape_html=False)
    if "&" in text:
        text = html.unescape(html.unescape(text))  # the catalogue holds some double-escaped entities
    if "<" in text:
        text = _TAG_RE.sub(" ", text)
    return text


_BATCH_SEPARATOR = "\x00"  # neither whitespace nor an accented letter: both steps leave it alone
# letters whose folded form is itself folded (Ǣ -> Æ -> AE): one pass folds them once, so where
# they occur the letters are not replaced one after the other
_FOLDED_TWICE = frozenset(c for c, base in _FOLD_ACCENTS.items() if any(b in _FOLD_ACCENTS for b in base))


def clean_texts(values: list, fold_accents: bool = True) -> list[str]:
    """``[clean_text(value, fold_accents) for value in values]``: the fields that need a repair
    get it one by one; the accent folding and the whitespace collapsing, which act on each
    letter and each run of whitespace alone, run once over the batch's texts joined by a
    separator that neither touches (a text holding the separator is cleaned one by one)."""
    texts = [
        value
        if type(value) is str and value.isascii() and "&" not in value and "<" not in value
        else _repaired(value)
        for value in values
    ]
    joined = _BATCH_SEPARATOR.join(texts)
    if joined.count(_BATCH_SEPARATOR) != len(texts) - 1:
        return [clean_text(value, fold_accents) for value in values]
    if fold_accents and not joined.isascii():
        found = set(_ACCENTED_RE.findall(joined))
        if found & _FOLDED_TWICE:
            joined = fold_accented_letters(joined)
        else:
            for letter in found:
                joined = joined.replace(letter, _FOLD_ACCENTS[letter])
    return list(map(str.strip, " ".join(joined.split()).split(_BATCH_SEPARATOR)))


def _strings(values: list) -> list[str]:
    return [v if isinstance(v, str) else ("" if v is None or v != v else str(v)) for v in values]


def as_text_frame(frame: pd.DataFrame | dict | Iterable[dict]) -> pd.DataFrame:
    """The two text columns as strings; a missing description column counts as empty."""
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    if "designation" not in frame.columns:
        raise ValueError("input needs a 'designation' column (and optionally 'description')")
    return pd.DataFrame(
        {
            col: _strings(frame[col].tolist()) if col in frame.columns else [""] * len(frame)
            for col in TEXT_COLUMNS
        },
        index=frame.index,
    )


class TextPreparer(TransformerMixin, BaseEstimator):
    """Cleans ``designation`` and ``description`` (see :func:`clean_text`); stateless."""

    def __init__(self, fold_accents: bool = True):
        self.fold_accents = fold_accents

    def fit(self, X, y=None):  # noqa: N803 - scikit-learn naming
        return self

    def transform(self, X):  # noqa: N803
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(X)  # noqa: N806
        if "designation" not in X.columns:
            raise ValueError("input needs a 'designation' column (and optionally 'description')")
        fold = self.fold_accents
        return pd.DataFrame(
            {
                col: [clean_text(v, fold) for v in X[col].tolist()] if col in X.columns else [""] * len(X)
                for col in TEXT_COLUMNS
            },
            index=X.index,
        )

    def get_feature_names_out(self, input_features=None):
        return np.asarray(TEXT_COLUMNS, dtype=object)


def softmax(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:  # binary decision_function: one column for the positive class
        scores = np.column_stack([-scores, scores]) / 2.0
    shifted = scores - scores.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def fit_temperature(scores: np.ndarray, y_index: np.ndarray) -> float:
    """The softmax temperature that minimises the log-loss of held-out decision values."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(y_index))

    def log_loss(log_t: float) -> float:
        proba = softmax(scores * np.exp(log_t))
        return float(-np.log(np.clip(proba[rows, y_index], 1e-12, None)).mean())

    result = minimize_scalar(log_loss, bounds=(np.log(0.05), np.log(200.0)), method="bounded")
    return float(np.exp(result.x))


class SoftmaxLinearClassifier(ClassifierMixin, BaseEstimator):
    """A linear classifier whose ``predict_proba`` is the softmax of its decision values.

    With ``calibration_fraction > 0`` the softmax temperature is fitted on that held-out share
    of the training rows (log-loss), then the estimator is refitted on every row. With 0 the
    temperature is 1 (right for multinomial logistic regression: its own probabilities).
    """

    def __init__(self, estimator=None, calibration_fraction: float = 0.1, random_state: int = 0):
        self.estimator = estimator
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    def fit(self, X, y):  # noqa: N803
        y = np.asarray(y)
        base = self.estimator if self.estimator is not None else SGDClassifier()
        self.classes_ = np.unique(y)
        self.temperature_ = 1.0
        held_out = self._held_out_rows(y)
        if held_out is not None:
            keep = np.ones(len(y), dtype=bool)
            keep[held_out] = False
            probe = clone(base).fit(X[keep], y[keep])
            if np.array_equal(probe.classes_, self.classes_):
                y_index = np.searchsorted(self.classes_, y[held_out])
                self.temperature_ = fit_temperature(probe.decision_function(X[held_out]), y_index)
        self.estimator_ = clone(base).fit(X, y)
        return self

    def _held_out_rows(self, y: np.ndarray) -> np.ndarray | None:
        """A stratified held-out sample, or None when the data is too small to spare one."""
        if self.calibration_fraction <= 0:
            return None
        rng = np.random.default_rng(self.random_state)
        picked = []
        for label in self.classes_:
            rows = np.flatnonzero(y == label)
            n = int(len(rows) * self.calibration_fraction)
            if len(rows) - n < 2:
                continue
            picked.append(rng.choice(rows, size=n, replace=False))
        held_out = np.concatenate(picked) if picked else np.array([], dtype=int)
        return held_out if len(held_out) >= max(50, 2 * len(self.classes_)) else None

    def coef_t(self) -> np.ndarray:
        """``coef_.T`` as a C-contiguous array, made once: scikit-learn's ``decision_function``
        copies the transposed coefficients on every call, the largest cost of one row's scores."""
        coef_t = self.__dict__.get("_coef_t")
        if coef_t is None:
            coef_t = self._coef_t = np.ascontiguousarray(self.estimator_.coef_.T)
        return coef_t

    def decision_function(self, X):  # noqa: N803
        """``X @ coef.T + intercept``."""
        scores = X @ self.coef_t() + self.estimator_.intercept_
        scores = np.asarray(scores)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_coef_t", None)  # a cache, rebuilt on first use
        return state

    def predict(self, X):  # noqa: N803
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X):  # noqa: N803
        return softmax(self.decision_function(X) * self.temperature_)


def make_classifier(model: str = "sgd", **params: Any) -> SoftmaxLinearClassifier:
    """The linear classifier for ``--model sgd|logreg`` (``params`` override its defaults)."""
    if model == "sgd":
        settings = {
            "loss": "hinge",
            "alpha": 2e-5,
            "max_iter": 30,
            "tol": 1e-3,  # a tighter tolerance adds epochs that barely move the weighted F1
            "n_jobs": 2,
            "random_state": 0,
        }
        settings.update(params)
        return SoftmaxLinearClassifier(SGDClassifier(**settings), calibration_fraction=0.1)
    if model == "logreg":
        settings = {"C": 10.0, "max_iter": 200, "tol": 1e-3, "random_state": 0}
        settings.update(params)
        return SoftmaxLinearClassifier(LogisticRegression(**settings), calibration_fraction=0.0)
    raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODEL_KINDS)}")


class CompactTfidfVectorizer(TfidfVectorizer):
    """A TfidfVectorizer that saves its vocabulary as one newline-joined string.

    skops stores a dict entry by entry (slow for a large vocabulary, on every save and load); one
    string is stored at once. ``stop_words_`` (every pruned n-gram, only kept for inspection) is
    dropped from the saved state, as scikit-learn's docs advise before persisting.
    """

    def __getstate__(self):
        state = dict(super().__getstate__())  # object.__getstate__ returns the live __dict__
        state.pop("stop_words_", None)
        vocabulary = state.pop("vocabulary_", None)
        if vocabulary is not None:
            terms = [""] * len(vocabulary)
            for term, index in vocabulary.items():
                terms[index] = term
            state["vocabulary_terms_"] = "\n".join(terms)
        return state

    def __setstate__(self, state):
        state = dict(state)
        terms = state.pop("vocabulary_terms_", None)
        if terms is not None:
            state["vocabulary_"] = {term: i for i, term in enumerate(terms.split("\n"))} if terms else {}
        super().__setstate__(state)


def make_vectorizer(max_features: int) -> TfidfVectorizer:
    return CompactTfidfVectorizer(
        lowercase=True,
        strip_accents=None,  # folded by TextPreparer at C speed
        ngram_range=(1, 2),
        min_df=2,
        max_df=0.5,
        max_features=max_features,
        sublinear_tf=True,
        dtype=np.float32,
    )


def build_pipeline(
    model: str = "sgd",
    *,
    designation_weight: float = DESIGNATION_WEIGHT,
    description_weight: float = DESCRIPTION_WEIGHT,
    **classifier_params: Any,
) -> Pipeline:
    """An unfitted pipeline: raw ``designation``/``description`` DataFrame -> ``prdtypecode``."""
    features = ColumnTransformer(
        [
            ("designation", make_vectorizer(200_000), "designation"),
            ("description", make_vectorizer(300_000), "description"),
        ],
        transformer_weights={"designation": designation_weight, "description": description_weight},
        sparse_threshold=1.0,
    )
    return Pipeline(
        [
            ("prepare", TextPreparer()),
            ("features", features),
            ("classifier", make_classifier(model, **classifier_params)),
        ]
    )


def vectorizers(pipeline: Pipeline) -> dict[str, TfidfVectorizer]:
    """The fitted TF-IDF vectorizer of each text column."""
    features = pipeline.named_steps["features"]
    return {name: features.named_transformers_[name] for name in TEXT_COLUMNS}


def trusted_types() -> list[str]:
    """Our own classes/functions that skops must trust to load the pipeline."""
    return [
        f"{__name__}.{cls.__name__}"
        for cls in (TextPreparer, CompactTfidfVectorizer, SoftmaxLinearClassifier)
    ]
