"""`rakuten-mlops train`: data from the products table -> fitted pipeline -> evaluation -> MLflow
run (params, metrics, artifacts, lineage, model) -> registered version -> optional gate."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rakuten_mlops.registry import connect, heartbeat, registry_errors
from rakuten_mlops.settings import Settings, redact_url
from rakuten_mlops.training import registry
from rakuten_mlops.training.dataset import INPUT_COLUMNS, TrainingData, load_training_data
from rakuten_mlops.training.registry import GateDecision
from rakuten_mlops.training.tracking import ensure_experiment, git_sha, package_version

SEARCH_GRID: dict[str, list[dict[str, Any]]] = {
    "sgd": [{"alpha": a} for a in (5e-6, 1e-5, 2e-5, 5e-5)],
    "logreg": [{"C": c} for c in (3.0, 10.0, 30.0)],
}


@dataclass
class TrainingResult:
    version: str
    run_id: str
    model: str
    metrics: dict[str, float]
    training_seconds: float
    lineage: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)
    decision: GateDecision | None = None
    pipeline: Any = field(default=None, repr=False)  # the fitted in-memory pipeline (not serialised)

    @property
    def decision_label(self) -> str:
        """``promoted``, ``rejected`` or ``registered`` (no gate run): the JSON Argo reads."""
        return self.decision.decision if self.decision is not None else "registered"

    def to_dict(self) -> dict[str, Any]:
        gate = self.decision.to_dict() if self.decision is not None else None
        return {
            "version": self.version,
            "decision": self.decision_label,
            "run_id": self.run_id,
            "model": self.model,
            "metrics": self.metrics,
            "training_seconds": round(self.training_seconds, 3),
            "lineage": self.lineage,
            "params": self.params,
            "f1_weighted": self.metrics.get("f1_weighted"),
            "f1_macro": self.metrics.get("f1_macro"),
            "accuracy": self.metrics.get("accuracy"),
            "candidate_f1": gate["candidate_f1"] if gate else self.metrics.get("f1_weighted"),
            "production_version": gate["production_version"] if gate else None,
            "production_f1": gate["production_f1"] if gate else None,
            "reasons": gate["reasons"] if gate else [],
            "reason": "; ".join(gate["reasons"]) if gate else "not submitted to the gate (no --promote)",
            "gate": gate,
        }

    def describe(self) -> str:
        m = self.metrics
        lines = [
            f"trained {self.model} in {self.training_seconds:.1f}s on {int(self.lineage['train_rows']):,} rows "
            f"(batches {self.lineage['batch_ids'] or '-'}): weighted F1 {m['f1_weighted']:.4f}, "
            f"macro F1 {m['f1_macro']:.4f}, accuracy {m['accuracy']:.4f} on {int(self.lineage['test_rows']):,} test rows",
            f"calibration: ECE {m['ece']:.4f} (15 bins; {m['ece_floor']:.4f} expected from sampling alone)"
            if "ece" in m
            else "calibration: not measured",
            f"registered version {self.version} (run {self.run_id})",
        ]
        lines.append(
            self.decision.describe() if self.decision else "not submitted to the gate (use --promote)"
        )
        return "\n".join(lines)


def search_hyperparameters(
    model: str, data: TrainingData, seed: int = 0
) -> tuple[dict[str, Any], list[dict]]:
    """Pick the classifier parameters with the best weighted F1 on a validation part of the
    training split (the test split stays untouched). The text features are fitted once."""
    from sklearn.base import clone
    from sklearn.metrics import f1_score

    from rakuten_mlops.model.pipeline import build_pipeline, make_classifier

    frame = data.train.frame
    rng = np.random.default_rng(seed)
    valid = rng.random(len(frame)) < 0.15
    pipeline = build_pipeline(model)
    features = pipeline[:-1]  # text preparation + TF-IDF, fitted once for every trial
    x_fit = features.fit_transform(frame.loc[~valid, INPUT_COLUMNS])
    x_valid = features.transform(frame.loc[valid, INPUT_COLUMNS])
    y_fit, y_valid = frame.loc[~valid, "prdtypecode"].to_numpy(), frame.loc[valid, "prdtypecode"].to_numpy()
    trials = []
    for params in SEARCH_GRID[model]:
        classifier = clone(make_classifier(model, **params)).fit(x_fit, y_fit)
        score = float(f1_score(y_valid, classifier.predict(x_valid), average="weighted", zero_division=0))
        trials.append({**params, "f1_weighted_valid": score})
    best = max(trials, key=lambda t: t["f1_weighted_valid"])
    return {k: v for k, v in best.items() if k != "f1_weighted_valid"}, trials


def fit_pipeline(model: str, data: TrainingData, params: dict[str, Any]):
    from rakuten_mlops.model.pipeline import build_pipeline

    pipeline = build_pipeline(model, **params)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Maximum number of iteration.*")
        pipeline.fit(data.train.X, data.train.y)
    return pipeline, time.perf_counter() - start


def run_training(
    settings: Settings,
    model: str = "sgd",
    search: bool = False,
    promote: bool = False,
    actor: str = "cli",
    progress: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train on everything loaded, log to MLflow, register a version, optionally run the gate.

    Fails before training: MLflow unreachable (RegistryUnavailableError), too few rows per
    class (NotEnoughDataError). A gate refusal is a normal result (``result.decision``).
    ``progress`` receives one line per step (the CLI prints them).
    """
    say = progress or (lambda _line: None)
    from rakuten_mlops.model.pipeline import MODEL_KINDS

    if model not in MODEL_KINDS:
        raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODEL_KINDS)}")
    with registry_errors(settings):
        connect(settings)  # fail fast when the registry is down
    data = load_training_data(settings)  # fail fast on too few rows
    say(
        f"data: {len(data.train):,} training and {len(data.test):,} test rows, "
        f"{len(data.class_counts())} classes, load batches {data.lineage()['batch_ids']}"
    )
    with registry_errors(settings):
        experiment_id = ensure_experiment(settings, settings.training_experiment)
    params: dict[str, Any] = {}
    trials: list[dict] = []
    search_seconds = 0.0
    if search:
        say(f"searching {len(SEARCH_GRID[model])} {model} settings on a validation part of the training rows")
        start = time.perf_counter()
        params, trials = search_hyperparameters(model, data)
        search_seconds = time.perf_counter() - start
    say(f"fitting {model}{' with ' + str(params) if params else ''}")
    pipeline, seconds = fit_pipeline(model, data, params)

    from rakuten_mlops.training.evaluate import evaluate

    evaluation = evaluate(pipeline, data.test)
    evaluation.extra["training_seconds"] = seconds
    if search:
        evaluation.extra["search_seconds"] = search_seconds
    say(f"logging the run and registering a version of {settings.registered_model} in MLflow")
    with registry_errors(settings), warnings.catch_warnings():
        # MLflow hints that int64 columns cannot hold missing values: ours (labels, ids) never do
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column.*")
        version, run_id = _log_and_register(settings, experiment_id, model, pipeline, data, evaluation, params, trials, actor)  # fmt: skip
    metrics = evaluation.metrics
    lineage = data.lineage()
    result = TrainingResult(
        version, run_id, model, metrics, seconds, lineage, _logged_params(pipeline, params), pipeline=pipeline
    )
    if promote:
        say(f"promotion gate for version {version}")
        ece = evaluation.calibration.excess if evaluation.calibration is not None else None
        registry.remember_score(settings, version, data.test, evaluation.f1_weighted, ece=ece)
        result.decision = registry.promote(settings, version, actor=actor)
    return result


def _logged_params(pipeline, params: dict[str, Any]) -> dict[str, Any]:
    classifier = pipeline.named_steps["classifier"]
    features = pipeline.named_steps["features"]
    inner = classifier.estimator
    out: dict[str, Any] = {
        "classifier": type(inner).__name__,
        "probabilities": "softmax of decision values",
        "softmax_temperature": round(float(classifier.temperature_), 4),
        "designation_weight": features.transformer_weights["designation"],
        "description_weight": features.transformer_weights["description"],
        "ngram_range": "1-2",
        "vocabulary_designation": len(features.named_transformers_["designation"].vocabulary_),
        "vocabulary_description": len(features.named_transformers_["description"].vocabulary_),
    }
    for key in ("alpha", "C", "loss", "max_iter", "tol"):
        if hasattr(inner, key):
            out[key] = getattr(inner, key)
    out.update({f"searched_{k}": v for k, v in params.items()})
    return out


def _log_and_register(settings, experiment_id, model, pipeline, data, evaluation, params, trials, actor):
    """Log the run and the model, then create the registered version WITH its tags in one call
    (a version exists complete or not at all), record its ``trained`` row, and only then end the run."""
    import mlflow
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.models import infer_signature

    from rakuten_mlops.model.pipeline import trusted_types
    from rakuten_mlops.training.evaluate import write_artifacts

    lineage = data.lineage()
    sha = git_sha()
    run_name = f"{model}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    with (
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run,
        heartbeat(settings, run.info.run_id),
    ):
        mlflow.set_tags(
            {
                "git_sha": sha,
                "mlflow.source.git.commit": sha,
                "package_version": package_version(),
                "model_kind": model,
                **{k: lineage[k] for k in ("batch_ids", "dataset_digest", "test_digest")},
            }
        )
        mlflow.log_params(
            {
                "model": model,
                "search": bool(trials),
                "train_rows": len(data.train),
                "test_rows": len(data.test),
                "classes": len(pipeline.classes_),
                **_logged_params(pipeline, params),
            }
        )
        mlflow.log_metrics(evaluation.metrics)
        mlflow.log_metrics({f"f1_class_{code}": f1 for code, f1 in evaluation.per_class_f1.items()})
        if evaluation.calibration is not None:
            mlflow.log_metrics(
                {
                    f"calibration_gap_class_{code}": c["gap"]
                    for code, c in evaluation.calibration.per_class.items()
                }
            )
        source = CodeDatasetSource(
            tags={
                "table": "products",
                "database": redact_url(settings.database_url),
                "batch_ids": lineage["batch_ids"],
            }
        )
        for split, context in ((data.train, "training"), (data.test, "testing")):
            dataset = mlflow.data.from_pandas(
                split.frame[["productid", *INPUT_COLUMNS, "prdtypecode", "batch_id"]],
                source=source,
                targets="prdtypecode",
                name=f"products-{split_name(context)}",
                digest=split.digest,
            )
            mlflow.log_input(dataset, context=context)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_artifacts(evaluation, folder)
            if trials:
                (folder / "search_trials.json").write_text(json.dumps(trials, indent=2))
            mlflow.log_artifacts(str(folder), artifact_path="evaluation")
        example = data.train.X.head(5).reset_index(drop=True)
        signature = infer_signature(example, pipeline.predict(example))
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=example,
            skops_trusted_types=trusted_types(),
            pip_requirements=_requirements(),
            tags={"model_kind": model},
        )
        tags = {
            "f1_weighted": f"{evaluation.f1_weighted:.6f}",
            "f1_macro": f"{evaluation.f1_macro:.6f}",
            "accuracy": f"{evaluation.accuracy:.6f}",
            **{
                key: f"{value:.6f}"
                for key, value in evaluation.metrics.items()
                if key.startswith(("ece", "reference_"))
            },
            "reference_class_shares": json.dumps(
                {str(k): round(v, 5) for k, v in evaluation.class_shares.items()}
            ),
            **lineage,
            "git_sha": sha,
            "package_version": package_version(),
            "model_kind": model,
            "run_id": run.info.run_id,
            "training_seconds": f"{evaluation.extra['training_seconds']:.2f}",
            "gate_decision": "registered",
            "gate_reason": "not submitted to the gate yet",
        }
        version = str(mlflow.register_model(info.model_uri, settings.registered_model, tags=tags).version)
        _record_trained(settings, version, run.info.run_id, model, evaluation.metrics, lineage, actor)
        return version, run.info.run_id


def split_name(context: str) -> str:
    return "train" if context == "training" else "test"


def _requirements() -> list[str]:
    """Pinned requirements of the logged model (given explicitly: MLflow's inference is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("scikit-learn", "pandas", "numpy", "scipy", "ftfy", "skops", "rakuten-mlops"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def _record_trained(settings, version, run_id, model, metrics, lineage, actor) -> None:
    from rakuten_mlops.db import record_model_event

    record_model_event(
        settings.database_url,
        "trained",
        settings.registered_model,
        version=version,
        decision="registered",
        candidate_f1=metrics["f1_weighted"],
        reason=f"{model} trained on {lineage['train_rows']} rows",
        actor=actor,
        details={"run_id": run_id, "metrics": metrics, **lineage},
    )
