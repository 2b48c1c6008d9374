"""How well a model's probabilities match its accuracy: expected calibration error (ECE), the
reliability table behind it, per-class reliability, and the reliability diagram.

Top-label ECE with equal-width confidence bins: rows are binned by their top probability, and
ECE is the row-weighted mean of ``|accuracy - mean confidence|`` over the bins.

ECE measured on a finite set is biased upwards: even a perfectly calibrated model shows a gap in
each bin from sampling alone, larger when the set is small. :func:`sampling_floor` measures that
part (labels drawn from the model's own probabilities, which makes it calibrated by
construction), and ``excess = ece - floor`` is the miscalibration the set can attribute to the
model. The gate compares the excess with ``RAKUTEN_MAX_ECE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ECE_BINS = 15


@dataclass
class Reliability:
    """The calibration of top-label probabilities on one labelled set."""

    ece: float
    bin_edges: np.ndarray  # ECE_BINS + 1 edges on [0, 1]
    bin_count: np.ndarray
    bin_confidence: np.ndarray  # mean top probability per bin (NaN when empty)
    bin_accuracy: np.ndarray  # share of correct top labels per bin (NaN when empty)
    per_class: dict[int, dict[str, float]]  # predicted class -> rows, confidence, accuracy, gap
    floor: float = 0.0  # ECE a calibrated model shows on a set of this size (sampling alone)

    @property
    def excess(self) -> float:
        """ECE above what sampling alone explains (never below 0)."""
        return max(self.ece - self.floor, 0.0)

    def metrics(self) -> dict[str, float]:
        """Scalar metrics, as logged to MLflow."""
        return {"ece": self.ece, "ece_floor": self.floor, "ece_excess": self.excess}

    @property
    def max_class_gap(self) -> float:
        gaps = [abs(c["gap"]) for c in self.per_class.values()]
        return max(gaps) if gaps else 0.0


def _bins(confidence: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    return edges, np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)


def _ece(index: np.ndarray, confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    gap = np.bincount(index, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / max(len(confidence), 1))  # sum over bins of n_b |acc_b - conf_b| / n


def sampling_floor(proba: np.ndarray, bins: int = ECE_BINS, draws: int = 50, seed: int = 0) -> float:
    """Mean ECE of these probabilities against labels drawn from themselves (calibrated by construction)."""
    proba = np.asarray(proba, dtype=np.float64)
    if not len(proba):
        return 0.0
    top = proba.argmax(axis=1)
    confidence = proba[np.arange(len(proba)), top]
    _, index = _bins(confidence, bins)
    rng = np.random.default_rng(seed)
    hits = rng.random((draws, len(proba))) < confidence  # the top label is right with its probability
    return float(np.mean([_ece(index, confidence, hit.astype(float), bins) for hit in hits]))


def reliability(
    proba: np.ndarray, classes: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS
) -> Reliability:
    """Reliability of ``proba`` (rows x ``classes``) against the true labels ``y_true``."""
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes)
    top = proba.argmax(axis=1)
    confidence = proba[np.arange(len(proba)), top]
    correct = classes[top] == np.asarray(y_true)
    edges, index = _bins(confidence, bins)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct.astype(float), minlength=bins) / count
    ece = _ece(index, confidence, correct.astype(float), bins)
    per_class = {}
    for position in np.unique(top):
        rows = top == position
        conf, acc = float(confidence[rows].mean()), float(correct[rows].mean())
        per_class[int(classes[position])] = {
            "rows": int(rows.sum()),
            "confidence": conf,
            "accuracy": acc,
            "gap": conf - acc,
        }
    return Reliability(ece, edges, count, mean_conf, accuracy, per_class, sampling_floor(proba, bins))


def plot_reliability(rel: Reliability, path: Path, title: str = "") -> Path:
    """The reliability diagram: accuracy per confidence bin against the diagonal, rows per bin below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = (rel.bin_edges[:-1] + rel.bin_edges[1:]) / 2
    width = rel.bin_edges[1] - rel.bin_edges[0]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 6.5), dpi=110, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    filled = rel.bin_count > 0
    top.bar(centres[filled], rel.bin_accuracy[filled], width=width * 0.95, color="#4c72b0", label="accuracy")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.plot(centres[filled], rel.bin_confidence[filled], "o", color="#dd8452", ms=4, label="mean confidence")
    top.set_ylabel("share of correct top labels")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(
        title
        or f"Reliability diagram: ECE {rel.ece:.4f} ({len(centres)} bins; {rel.floor:.4f} from sampling alone)",
        fontsize=9,
    )
    bottom.bar(centres, rel.bin_count, width=width * 0.95, color="#8c8c8c")
    bottom.set_xlabel("top probability (confidence)")
    bottom.set_ylabel("rows")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
