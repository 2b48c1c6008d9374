"""Loading the registered pipeline back from MLflow (serving, the gate, drift)."""

from __future__ import annotations

import os
import tempfile


def model_uri(name: str, *, version: str | None = None, alias: str = "production") -> str:
    """``models:/NAME/VERSION`` when a version is pinned, else ``models:/NAME@ALIAS``."""
    return f"models:/{name}/{version}" if version else f"models:/{name}@{alias}"


def load_pipeline(uri: str):
    """The scikit-learn Pipeline behind ``uri`` (``models:/...``, ``runs:/...`` or a local path).

    MLflow refuses to deserialize any model (skops included) unless
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is true. Our own registry is a trusted source, so
    it is switched on here unless the operator set it explicitly (set it to ``false`` to forbid).
    The skops allow-list saved with the model still limits which types can be loaded.

    The artifacts are downloaded into a scratch directory removed once the pipeline is in
    memory: left to itself MLflow downloads every load into a new temporary directory and keeps
    it, so a server that follows its alias would fill its disk one model copy per swap.
    """
    import mlflow.sklearn

    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    with tempfile.TemporaryDirectory(prefix="rakuten-model-") as scratch:
        return mlflow.sklearn.load_model(uri, dst_path=scratch)
