"""Running the registered pipeline on request batches, with its text cleaning done once.

The prediction and the prediction-log features both need the cleaned text. Calling
``pipeline.predict_proba`` and then ``prediction_features`` would clean every text twice and
pay pandas/scikit-learn validation overhead on each call. :class:`StepwisePipeline` runs the
same fitted steps one by one (clean -> per-column TF-IDF with the transformer weights ->
classifier), keeps the cleaned text for the features, and is only used after a self-check at
load time shows it gives the same probabilities as ``pipeline.predict_proba``. Any pipeline of
another shape is run as a whole (:class:`WholePipeline`).
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


def plan_for(pipeline: Any) -> WholePipeline | StepwisePipeline:
    """The fastest runner that gives exactly the pipeline's probabilities on probe products."""
    whole = WholePipeline(pipeline)
    try:
        stepwise = StepwisePipeline(pipeline)
    except (TypeError, AttributeError, KeyError) as exc:
        log.info("running the pipeline as a whole: %s", exc)
        return whole
    designations = [d for d, _ in PROBE_PRODUCTS]
    descriptions = [e or "" for _, e in PROBE_PRODUCTS]
    try:
        expected, expected_features = whole.run(designations, descriptions)
        got, got_features = stepwise.run(designations, descriptions)
    except Exception as exc:
        log.warning("step-by-step run failed, running the pipeline as a whole: %s", exc)
        return whole
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-6, atol=1e-9):
        log.warning("step-by-step probabilities differ from the pipeline's: running it as a whole")
        return whole
    if [f[:3] for f in got_features] != [f[:3] for f in expected_features]:
        log.warning("step-by-step features differ from the pipeline's: running it as a whole")
        return whole
    return stepwise
