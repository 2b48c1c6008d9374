"""Evaluation on the fixed test split: weighted F1 (the challenge's metric), macro F1, accuracy,
per-class F1, a confusion matrix (PNG), the classification report, and the calibration of the
probabilities (ECE, per-class reliability, reliability diagram), which the performance estimate
relies on. The split's mean out-of-vocabulary rate and confidence are kept as the reference the
estimate compares live windows with."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from rakuten_mlops.model.calibration import Reliability, reliability
from rakuten_mlops.training.dataset import LabelledSplit


@dataclass
class Evaluation:
    f1_weighted: float
    f1_macro: float
    accuracy: float
    per_class_f1: dict[int, float]
    report: str
    labels: list[int]
    confusion: np.ndarray
    test_rows: int
    extra: dict[str, float] = field(default_factory=dict)
    calibration: Reliability | None = None
    reference: dict[str, float] = field(default_factory=dict)  # mean oov_rate and confidence of the split
    class_shares: dict[int, float] = field(default_factory=dict)  # predicted-class shares on the split

    @property
    def metrics(self) -> dict[str, float]:
        """Scalar metrics, as logged to MLflow."""
        return {
            "f1_weighted": self.f1_weighted,
            "f1_macro": self.f1_macro,
            "accuracy": self.accuracy,
            **(self.calibration.metrics() if self.calibration is not None else {}),
            **{f"reference_{k}": v for k, v in self.reference.items()},
            **self.extra,
        }


def weighted_f1(pipeline, split: LabelledSplit) -> float:
    """The gate's score: weighted F1 of ``pipeline`` on ``split``."""
    return float(f1_score(split.y, pipeline.predict(split.X), average="weighted", zero_division=0))


def calibration_of(pipeline, split: LabelledSplit) -> Reliability:
    """ECE and reliability of ``pipeline``'s probabilities on ``split``."""
    return reliability(np.asarray(pipeline.predict_proba(split.X)), pipeline.classes_, np.asarray(split.y))


def reference_levels(pipeline, split: LabelledSplit, proba: np.ndarray) -> dict[str, float]:
    """Mean out-of-vocabulary rate and mean confidence on ``split`` (empty for another pipeline shape)."""
    from rakuten_mlops.model.features import prediction_features

    try:
        oov = prediction_features(pipeline, split.X)["oov_rate"].to_numpy()
    except (KeyError, AttributeError):
        return {}
    return {"oov_rate": float(oov.mean()), "confidence": float(proba.max(axis=1).mean())}


def evaluate(pipeline, split: LabelledSplit) -> Evaluation:
    y_true = split.y
    proba = np.asarray(pipeline.predict_proba(split.X))
    y_pred = np.asarray(pipeline.classes_)[proba.argmax(axis=1)]
    labels = sorted(set(int(v) for v in y_true) | set(int(v) for v in pipeline.classes_))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return Evaluation(
        f1_weighted=float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        f1_macro=float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        accuracy=float(accuracy_score(y_true, y_pred)),
        per_class_f1={int(code): float(v) for code, v in zip(labels, per_class, strict=True)},
        report=classification_report(
            y_true, y_pred, labels=labels, target_names=_names(labels), digits=4, zero_division=0
        ),
        labels=labels,
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        test_rows=len(split),
        calibration=reliability(proba, pipeline.classes_, np.asarray(y_true)),
        reference=reference_levels(pipeline, split, proba),
        class_shares={
            int(c): float(n) / len(y_pred)
            for c, n in zip(*np.unique(y_pred, return_counts=True), strict=True)
        }
        if len(y_pred)
        else {},
    )


def _names(labels: list[int]) -> list[str]:
    from rakuten_mlops.data.categories import category_name

    return [f"{code} {category_name(code)}" for code in labels]


def write_artifacts(evaluation: Evaluation, folder: Path) -> list[Path]:
    """confusion_matrix.png, classification_report.txt, per_class_f1.json, metrics.json, and with
    a calibration: reliability_diagram.png and reliability.json (bins and per-class reliability)."""
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / "classification_report.txt"
    report.write_text(evaluation.report, encoding="utf-8")
    per_class = folder / "per_class_f1.json"
    per_class.write_text(json.dumps({str(k): v for k, v in evaluation.per_class_f1.items()}, indent=2))
    metrics = folder / "metrics.json"
    metrics.write_text(json.dumps(evaluation.metrics, indent=2))
    written = [plot_confusion_matrix(evaluation, folder / "confusion_matrix.png"), report, per_class, metrics]
    rel = evaluation.calibration
    if rel is not None:
        from rakuten_mlops.model.calibration import plot_reliability

        table = folder / "reliability.json"
        bins = [
            {"low": float(lo), "high": float(hi), "rows": int(n),
             "confidence": None if n == 0 else float(c), "accuracy": None if n == 0 else float(a)}
            for lo, hi, n, c, a in zip(
                rel.bin_edges[:-1], rel.bin_edges[1:], rel.bin_count, rel.bin_confidence, rel.bin_accuracy,
                strict=True,
            )
        ]  # fmt: skip
        per_class_rel = {str(code): values for code, values in rel.per_class.items()}
        table.write_text(json.dumps({**rel.metrics(), "bins": bins, "per_class": per_class_rel}, indent=2))
        written += [plot_reliability(rel, folder / "reliability_diagram.png"), table]
    return written


def plot_confusion_matrix(evaluation: Evaluation, path: Path) -> Path:
    """Row-normalised confusion matrix (recall per true class), counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = evaluation.confusion
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    n = len(evaluation.labels)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * n + 3), max(5, 0.45 * n + 2)), dpi=110)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(c) for c in evaluation.labels], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [str(c) for c in evaluation.labels], fontsize=7)
    ax.set_xlabel("predicted prdtypecode")
    ax.set_ylabel("true prdtypecode")
    ax.set_title(
        f"Confusion matrix ({evaluation.test_rows:,} test rows, weighted F1 {evaluation.f1_weighted:.4f})",
        fontsize=9,
    )
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(
                    j, i, str(counts[i, j]), ha="center", va="center", fontsize=5,
                    color="white" if share[i, j] > 0.5 else "black",
                )  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
