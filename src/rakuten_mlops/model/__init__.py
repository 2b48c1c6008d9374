"""The classifier (one scikit-learn Pipeline) and the monitoring features computed from it."""

from rakuten_mlops.model.features import FEATURE_COLUMNS, prediction_features
from rakuten_mlops.model.pipeline import MODEL_KINDS, TEXT_COLUMNS, build_pipeline, clean_text

__all__ = [
    "FEATURE_COLUMNS",
    "MODEL_KINDS",
    "TEXT_COLUMNS",
    "build_pipeline",
    "clean_text",
    "prediction_features",
]
