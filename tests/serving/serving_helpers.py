"""Register small real classifiers in an MLflow registry for the serving tests and the benchmark.

Uses the training package's pipeline (``rakuten_mlops.model``): a DataFrame with
``designation`` and ``description`` in, ``classes_`` = prdtypecode integers, ``predict_proba``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SAMPLE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "rakuten_sample"


def sample_frame() -> pd.DataFrame:
    """The 429 real labelled rows shipped in shared/ (designation, description, prdtypecode, ...)."""
    x = pd.read_csv(SAMPLE_DIR / "X_sample.csv", index_col=0)
    y = pd.read_csv(SAMPLE_DIR / "Y_sample.csv", index_col=0)
    frame = x.join(y)
    frame["description"] = frame["description"].fillna("").astype(str)
    frame["designation"] = frame["designation"].astype(str)
    return frame


def build_pipeline(variant: int = 0):
    """The training package's pipeline (``variant`` changes the fit, so versions predict differently)."""
    from rakuten_mlops.model import build_pipeline as build

    return build("sgd", alpha=2e-5 * (1 + 4 * variant), random_state=variant)


def register_version(tracking_uri: str, name: str, *, variant: int = 0, alias: str | None = "production") -> str:
    """Fit, log and register one version; point ``alias`` at it. Returns the version number."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    from rakuten_mlops.model.pipeline import trusted_types

    frame = sample_frame()
    pipeline = build_pipeline(variant)
    pipeline.fit(frame[["designation", "description"]], frame["prdtypecode"])
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment(f"{name}-tests")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            registered_model_name=name,
            skops_trusted_types=trusted_types(),
        )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "f1_weighted", "0.8")
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version
