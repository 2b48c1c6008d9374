"""Why the linear model chose a class: each n-gram's exact share of the class's decision value.

For the pipeline :func:`~rakuten_mlops.model.pipeline.build_pipeline` makes, the score (decision
value) of class ``c`` for one product is linear in the product's row ``x`` of the TF-IDF matrix::

    score[c] = intercept[c] + sum over the product's features f of x[f] * coef[f, c]

``x[f]`` is what the features step puts in the matrix (sublinear term frequency x idf,
l2-normalised per column, times the column's weight), so ``x[f] * coef[f, c]`` is the feature's
contribution and the contributions plus the intercept are the score, exactly. The probabilities
are ``softmax(temperature * score)``: contributions and scores are given in score units, before
the temperature; multiplied by ``temperature`` they are the softmax's logits (the temperature is
positive, so it never changes which features push most).

A feature is named by its column and n-gram, as the vectorizer sees it (lowercased, accents
folded): ``designation:"manette"``, ``description:"sans fil"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from rakuten_mlops.model.pipeline import TEXT_COLUMNS

Matrix = Callable[[list[str], list[str]], sparse.csr_matrix]


@dataclass(frozen=True, eq=False)
class LinearExplainer:
    """What explanations read from one fitted pipeline (built once per served model)."""

    columns: tuple[str, ...]  # the text column of each block of features, in matrix order
    offsets: np.ndarray  # first feature index of each column's block
    terms: np.ndarray  # the n-gram of every feature (object array, matrix order)
    coef_t: np.ndarray  # (n_features, n_classes)
    intercept: np.ndarray  # (n_classes,)
    temperature: float
    classes: np.ndarray  # prdtypecode of each class column
    matrix: Matrix  # products -> the TF-IDF matrix the classifier sees


def explainer_for(pipeline: Any, runner: Any = None) -> LinearExplainer:
    """The explainer of a prepare -> per-column TF-IDF -> ``SoftmaxLinearClassifier`` pipeline.

    The matrix comes from ``runner.matrix`` (the compiled runner's) when it has one, else from
    the pipeline's own features step. Raises ``TypeError`` for any other pipeline shape.
    """
    steps = getattr(pipeline, "steps", None)
    names = [name for name, _ in steps] if steps else None
    if names != ["prepare", "features", "classifier"]:
        raise TypeError(f"pipeline steps {names} are not prepare/features/classifier")
    features, classifier = pipeline.named_steps["features"], pipeline.named_steps["classifier"]
    if not hasattr(classifier, "coef_t") or not hasattr(classifier, "temperature_"):
        raise TypeError(f"classifier {type(classifier).__name__} is not a fitted SoftmaxLinearClassifier")
    blocks = [
        (name, transformer)
        for name, transformer, _ in getattr(features, "transformers_", [])
        if transformer != "drop" and name != "remainder"
    ]
    if [name for name, _ in blocks] != list(TEXT_COLUMNS) or not all(
        hasattr(t, "vocabulary_") for _, t in blocks
    ):
        raise TypeError("features are not one fitted vectorizer per designation/description column")
    terms = [np.asarray(t.get_feature_names_out(), dtype=object) for _, t in blocks]
    coef_t = classifier.coef_t()
    classes = np.asarray(classifier.classes_)
    n_features = sum(len(block) for block in terms)
    if coef_t.shape != (n_features, len(classes)):
        raise TypeError(
            f"coefficients of shape {coef_t.shape} do not match {n_features} features x {len(classes)} classes"
        )
    if runner is not None and hasattr(runner, "matrix"):
        matrix: Matrix = runner.matrix
    else:
        steps_before = pipeline[:-1]

        def matrix(designations: list[str], descriptions: list[str]) -> sparse.csr_matrix:
            frame = pd.DataFrame({"designation": designations, "description": descriptions})
            return sparse.csr_matrix(steps_before.transform(frame))

    return LinearExplainer(
        columns=tuple(name for name, _ in blocks),
        offsets=np.cumsum([0, *(len(block) for block in terms[:-1])]),
        terms=np.concatenate(terms),
        coef_t=coef_t,
        intercept=np.asarray(classifier.estimator_.intercept_, dtype=np.float64).ravel(),
        temperature=float(classifier.temperature_),
        classes=classes,
        matrix=matrix,
    )


def contributions(
    explainer: LinearExplainer, matrix: sparse.csr_matrix, row: int
) -> tuple[np.ndarray, np.ndarray]:
    """Feature indices of product ``row`` and their contributions to every class, an
    (n features of the product x n classes) array in float64: a float32 matrix value times a
    float32 coefficient is exact in float64, and their sum is the score to float64 precision."""
    start, end = matrix.indptr[row], matrix.indptr[row + 1]
    indices = matrix.indices[start:end]
    return indices, matrix.data[start:end].astype(np.float64)[:, None] * explainer.coef_t[indices]


def explain(
    explainer: LinearExplainer,
    matrix: sparse.csr_matrix,
    predicted: Sequence[int],
    top: int | Sequence[int],
    category: Callable[[int], str] = str,
) -> list[dict]:
    """One explanation per row of ``matrix``: the ``top`` (one number, or one per row) features
    that pushed the predicted class (``predicted[row]``, a prdtypecode) most, and the same for the
    runner-up class (the highest score of the other classes).

    Each class part gives its ``score``, ``intercept``, the listed features (``tfidf`` value x
    ``coefficient`` = ``contribution``) and ``rest``, the sum of every other feature's
    contribution: ``intercept + sum(contributions) + rest == score``. Only features that push
    toward the class (contribution > 0) are listed. Scores are summed in float64 (a float32
    matrix value times a float32 coefficient is exact in float64); the served probabilities come
    from the classifier's float32 arithmetic and agree to float32 precision.
    """
    n = matrix.shape[0]
    column_of = {int(code): i for i, code in enumerate(explainer.classes.tolist())}
    best = np.fromiter((column_of[int(code)] for code in predicted), dtype=np.intp, count=n)
    others = np.asarray(matrix @ explainer.coef_t, dtype=np.float64) + explainer.intercept
    others[np.arange(n), best] = -np.inf
    runner_up = others.argmax(axis=1)
    tops = np.broadcast_to(np.asarray(top, dtype=np.intp), (n,))
    parts = [_evidence(explainer, matrix, columns, tops, category) for columns in (best, runner_up)]
    return [
        {"temperature": explainer.temperature, "predicted": mine, "runner_up": theirs}
        for mine, theirs in zip(*parts, strict=True)
    ]


def _evidence(
    explainer: LinearExplainer,
    matrix: sparse.csr_matrix,
    columns: np.ndarray,
    tops: np.ndarray,
    category: Callable[[int], str],
) -> list[dict]:
    """Per row, the evidence for class column ``columns[row]``: every feature's contribution in
    one numpy pass over the matrix, then the ``tops[row]`` positive ones of each row, largest first."""
    n, indptr = matrix.shape[0], matrix.indptr
    rows = np.repeat(np.arange(n), np.diff(indptr))
    contribution = matrix.data.astype(np.float64) * explainer.coef_t[matrix.indices, columns[rows]]
    intercept = explainer.intercept[columns]
    score = np.bincount(rows, weights=contribution, minlength=n) + intercept
    positive = np.flatnonzero(contribution > 0)
    order = positive[np.lexsort((-contribution[positive], rows[positive]))]  # by row, largest first
    in_order = rows[order]
    rank = np.arange(len(order)) - np.searchsorted(in_order, in_order)  # place within its row
    picked = order[rank < tops[in_order]]
    listed = np.bincount(rows[picked], weights=contribution[picked], minlength=n)
    features = matrix.indices[picked]
    blocks = np.searchsorted(explainer.offsets, features, side="right") - 1
    tokens = [
        {
            "feature": f'{explainer.columns[block]}:"{term}"',
            "column": explainer.columns[block],
            "term": term,
            "tfidf": tfidf,
            "coefficient": coefficient,
            "contribution": value,
        }
        for block, term, tfidf, coefficient, value in zip(
            blocks.tolist(),
            explainer.terms[features].tolist(),
            matrix.data[picked].tolist(),
            explainer.coef_t[features, columns[rows[picked]]].tolist(),
            contribution[picked].tolist(),
            strict=True,
        )
    ]
    ends = np.searchsorted(rows[picked], np.arange(1, n + 1)).tolist()
    codes = explainer.classes[columns].tolist()
    out, start = [], 0
    for row, end in enumerate(ends):
        out.append(
            {
                "prdtypecode": codes[row],
                "category": category(codes[row]),
                "score": float(score[row]),
                "intercept": float(intercept[row]),
                "tokens": tokens[start:end],
                "rest": float(score[row] - intercept[row] - listed[row]),
            }
        )
        start = end
    return out
