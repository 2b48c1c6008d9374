"""Classification performance estimated from calibrated probabilities, without labels.

If the probabilities are calibrated, the unknown true class of a logged prediction is a draw
from its probability vector. Two consequences, both used here (the idea of NannyML's CBPE):

- the **expected confusion matrix** of a window: the row of true class ``i`` and column of
  predicted class ``j`` holds the sum, over the predictions whose top class is ``j``, of their
  probability of ``i``. Its weighted F1, macro F1 and accuracy are the point estimates.
- the **interval**: the realized F1 of the window is itself random given its inputs (the labels
  are). Drawing every row's label from its probability vector many times gives the distribution
  of the realized value under calibration; its 5th and 95th percentiles are the 90 % interval.
  Rows are not resampled (a bootstrap would measure how the estimate varies between windows,
  not how far this window's realized value can fall from it). Those draws assume perfect
  calibration; the interval is widened on both sides by ``margin``, the version's measured
  calibration error (ECE above its sampling floor), which bounds how far mean confidence and
  accuracy can part on data like the test split.

Macro F1 averages the classes present in the window's labels or predictions, as scikit-learn
does: in the expected matrix a class counts in proportion to the probability that it appears.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

INTERVAL_LEVEL = 0.90
DRAWS = 300
METRICS = ("f1_weighted", "f1_macro", "accuracy")


def scores(confusion: np.ndarray, presence: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Weighted F1, macro F1, accuracy and per-class F1 of confusion matrices (``...`` x true x
    predicted). ``presence`` weighs each class in the macro mean (default: classes with a row
    or a prediction)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    support = confusion.sum(axis=-1)
    predicted = confusion.sum(axis=-2)
    n = support.sum(axis=-1)
    denominator = support + predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)
        weights = (denominator > 0).astype(float) if presence is None else presence
        return {
            "f1_weighted": np.where(n > 0, (support * f1).sum(axis=-1) / np.where(n > 0, n, 1), 0.0),
            "f1_macro": (weights * f1).sum(axis=-1) / np.maximum(weights.sum(axis=-1), 1e-12),
            "accuracy": np.where(n > 0, tp.sum(axis=-1) / np.where(n > 0, n, 1), 0.0),
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }


def expected_confusion(proba: np.ndarray) -> np.ndarray:
    """Classes x classes: expected count of (true class, predicted class) under calibration."""
    proba = np.asarray(proba, dtype=np.float64)
    k = proba.shape[1]
    top = proba.argmax(axis=1)
    confusion = np.zeros((k, k))
    np.add.at(confusion.T, top, proba)  # column j += probability rows of predictions of j
    return confusion


def sampled_confusions(proba: np.ndarray, draws: int, seed: int = 0) -> np.ndarray:
    """``draws`` confusion matrices with every row's label drawn from its probability vector."""
    proba = np.asarray(proba, dtype=np.float64)
    n, k = proba.shape
    top = proba.argmax(axis=1)
    cumulative = np.cumsum(proba, axis=1)
    cumulative[:, -1] = 1.0 + 1e-9  # rounding must not leave a draw past the last class
    rng = np.random.default_rng(seed)
    out = np.empty((draws, k, k))
    for d in range(draws):
        u = rng.random(n)
        labels = (cumulative < u[:, None]).sum(axis=1)
        out[d] = np.bincount(labels * k + top, minlength=k * k).reshape(k, k)
    return out


@dataclass
class PerformanceEstimate:
    """Estimated scores of one window, with their intervals and the per-class table."""

    n: int
    f1_weighted: float
    f1_macro: float
    accuracy: float
    intervals: dict[str, list[float]]
    per_class: list[dict] = field(default_factory=list)
    level: float = INTERVAL_LEVEL

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "f1_weighted": self.f1_weighted,
            "f1_macro": self.f1_macro,
            "accuracy": self.accuracy,
            "interval": self.intervals["f1_weighted"],
            "intervals": self.intervals,
            "interval_level": self.level,
            "per_class": self.per_class,
        }


def estimate(
    proba: np.ndarray,
    classes: np.ndarray,
    *,
    draws: int = DRAWS,
    level: float = INTERVAL_LEVEL,
    margin: float = 0.0,
    seed: int = 0,
) -> PerformanceEstimate:
    """The estimate of one window from its rows' calibrated probabilities (rows x ``classes``)."""
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes)
    if len(proba) == 0:
        nan = float("nan")
        return PerformanceEstimate(0, nan, nan, nan, {m: [nan, nan] for m in METRICS})
    presence = 1.0 - np.exp(np.log1p(-np.clip(proba, 0.0, 1.0 - 1e-12)).sum(axis=0))  # P(class labelled)
    predicted_any = np.bincount(proba.argmax(axis=1), minlength=len(classes)) > 0
    point = scores(expected_confusion(proba), presence=np.where(predicted_any, 1.0, presence))
    sampled = scores(sampled_confusions(proba, draws, seed))
    tail = (1.0 - level) / 2
    intervals = {
        m: [
            max(float(np.quantile(sampled[m], tail)) - margin, 0.0),
            min(float(np.quantile(sampled[m], 1 - tail)) + margin, 1.0),
        ]
        for m in METRICS
    }
    f1_low = np.quantile(sampled["f1"], tail, axis=0)
    f1_high = np.quantile(sampled["f1"], 1 - tail, axis=0)
    per_class = [
        {
            "prdtypecode": int(code),
            "f1": float(point["f1"][i]),
            "interval": [float(f1_low[i]), float(f1_high[i])],
            "expected_support": float(point["support"][i]),
            "predicted": int(round(float(point["predicted"][i]))),
        }
        for i, code in enumerate(classes)
        if point["support"][i] >= 0.5 or point["predicted"][i] > 0
    ]
    return PerformanceEstimate(
        len(proba),
        float(point["f1_weighted"]),
        float(point["f1_macro"]),
        float(point["accuracy"]),
        intervals,
        per_class,
        level,
    )


def realized(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The same three scores from known labels (scikit-learn's definitions)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "f1_weighted": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }
