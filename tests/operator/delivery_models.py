"""Candidate models of the progressive-delivery tests, made from the real pipeline fitted on the sample.

- ``good``: the stable fit registered again (a retrain on the same data: same answers);
- ``one_class``: the fit with its classifier's weights zeroed and one intercept raised, a model
  that loads and answers fine but predicts the same class for everything (a broken step);
- ``slow``: the fit with a :class:`Pause` step before the classifier, every call takes that much
  longer (and the compiled runner does not apply, as for any pipeline of another shape).
"""

from __future__ import annotations

import copy
import time

from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

PAUSE_TYPE = f"{__name__}.Pause"


class Pause(TransformerMixin, BaseEstimator):
    """Passes its input through after ``seconds``: a slower model with the same answers."""

    def __init__(self, seconds: float = 0.03):
        self.seconds = seconds

    def fit(self, X, y=None):  # noqa: N803
        return self

    def transform(self, X):  # noqa: N803
        time.sleep(self.seconds)
        return X


def one_class(pipeline: Pipeline, code: int) -> Pipeline:
    """A copy of ``pipeline`` that predicts ``code`` for every product."""
    broken = copy.deepcopy(pipeline)
    classifier = broken.named_steps["classifier"]
    estimator = classifier.estimator_
    estimator.coef_ = estimator.coef_ * 0.0
    estimator.intercept_ = estimator.intercept_ * 0.0
    estimator.intercept_[list(classifier.classes_).index(code)] = 3.0
    classifier.__dict__.pop("_coef_t", None)
    return broken


def slowed(pipeline: Pipeline, seconds: float) -> Pipeline:
    """``pipeline`` with a :class:`Pause` of ``seconds`` before its classifier."""
    steps = list(copy.deepcopy(pipeline).steps)
    return Pipeline([*steps[:-1], ("pause", Pause(seconds)), steps[-1]])


def log_candidate(tracking_uri: str, pipeline: Pipeline):
    """Log ``pipeline`` as the serving tests do, trusting :class:`Pause` too (ModelInfo)."""
    import mlflow
    import mlflow.sklearn

    from rakuten_mlops.model.pipeline import trusted_types

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("delivery-tests")
    with mlflow.start_run():
        return mlflow.sklearn.log_model(
            pipeline,
            name="model",
            skops_trusted_types=[*trusted_types(), PAUSE_TYPE],
            pip_requirements=["scikit-learn", "pandas", "ftfy"],
        )
