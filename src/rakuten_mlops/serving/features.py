"""Per-prediction features stored in the prediction log (the ones drift compares with training data).

Uses ``rakuten_mlops.model.features.prediction_features`` (the training package's definition)
so the log and the reference data are measured the same way; falls back to the same simple
definitions, without ``oov_rate``, in an image that does not ship the training package.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

FEATURE_COLUMNS = ("text_length", "word_count", "description_empty", "oov_rate")


@functools.cache
def _shared_definition() -> Callable[[Any, Any], Any] | None:
    try:
        from rakuten_mlops.model.features import prediction_features
    except ImportError:
        return None
    return prediction_features


def prediction_features(pipeline: Any, frame: Any) -> list[tuple[int, int, bool, float | None]]:
    """``(text_length, word_count, description_empty, oov_rate)`` per row of ``frame``."""
    shared = _shared_definition()
    if shared is not None:
        try:
            feats = shared(pipeline, frame)
            oov = feats["oov_rate"].tolist() if "oov_rate" in feats else [None] * len(feats)
            return list(
                zip(
                    feats["text_length"].astype(int).tolist(),
                    feats["word_count"].astype(int).tolist(),
                    feats["description_empty"].astype(bool).tolist(),
                    [None if v != v else float(v) for v in oov],  # NaN -> None
                    strict=True,
                )
            )
        except Exception:  # a model the shared definition does not understand: simple features
            pass
    out = []
    for designation, description in zip(frame["designation"], frame["description"], strict=True):
        text = f"{designation} {description}" if description else designation
        out.append((len(designation) + len(description or ""), len(text.split()), not description, None))
    return out
