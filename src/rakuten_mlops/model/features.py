"""Per-row input features for monitoring, computed the same way for the training data (the drift
reference) and for every API request batch (the prediction log).

Definitions (on the text the model reads, i.e. after the pipeline's own cleaning):

- ``text_length``: characters of the cleaned designation + cleaned description.
- ``word_count``: word tokens of both fields (the TF-IDF tokenizer's).
- ``description_empty``: the cleaned description is empty.
- ``oov_rate``: share of those tokens that are not in the fitted TF-IDF vocabulary of their
  column (1.0 when the text has no token at all: the model knows nothing of it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from rakuten_mlops.model.pipeline import TEXT_COLUMNS, vectorizers

FEATURE_COLUMNS = ("text_length", "word_count", "description_empty", "oov_rate")


def prediction_features(pipeline: Pipeline, frame: pd.DataFrame) -> pd.DataFrame:
    """``text_length``, ``word_count``, ``description_empty``, ``oov_rate`` for each row of ``frame``.

    ``frame`` has the model's input columns (``designation``, ``description``); the result keeps
    its index.
    """
    cleaned = pipeline.named_steps["prepare"].transform(frame)
    n = len(cleaned)
    tokens = np.zeros(n, dtype=np.int64)
    unknown = np.zeros(n, dtype=np.int64)
    length = np.zeros(n, dtype=np.int64)
    for column, vectorizer in vectorizers(pipeline).items():
        texts = cleaned[column].tolist()
        length += np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
        tokenize = vectorizer.build_tokenizer()
        vocabulary = vectorizer.vocabulary_
        lowercase = vectorizer.lowercase
        for i, text in enumerate(texts):
            if not text:
                continue
            words = tokenize(text.lower() if lowercase else text)
            tokens[i] += len(words)
            unknown[i] += sum(1 for w in words if w not in vocabulary)
    # one space joins the two fields when both are present
    length += ((cleaned["designation"].str.len() > 0) & (cleaned["description"].str.len() > 0)).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        oov = np.where(tokens > 0, unknown / np.maximum(tokens, 1), 1.0)
    return pd.DataFrame(
        {
            "text_length": length,
            "word_count": tokens,
            "description_empty": (cleaned["description"].str.len() == 0).to_numpy(),
            "oov_rate": oov.astype(np.float64),
        },
        index=cleaned.index,
    )


__all__ = ["FEATURE_COLUMNS", "TEXT_COLUMNS", "prediction_features"]
