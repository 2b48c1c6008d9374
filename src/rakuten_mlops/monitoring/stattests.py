"""Drift tests, all run by Evidently 0.7 (``ValueDrift``) so they appear in its HTML report.

Evidently's own ``chisquare`` is a goodness-of-fit test that takes the reference proportions as
exact: with a reference of a few thousand rows it flags many windows drawn from the reference's
own distribution (docs/monitoring.md has the false-alarm rate). The predicted-class test is a
two-sample chi-square (scipy's ``chi2_contingency`` on the 2 x classes count table), registered
here as an Evidently stat test named ``chi2_two_sample``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

TWO_SAMPLE_CHI2 = "chi2_two_sample"


@dataclass(frozen=True)
class DriftTest:
    """One test of one feature: which column, which Evidently method, and how to read its score."""

    feature: str  # name in the summary and the rakuten_drift_score{feature} label
    column: str  # column of the monitoring frame
    method: str  # Evidently stat test name
    kind: str  # "p_value" (drifted when score < threshold) or "distance" (drifted when >= threshold)
    uses_model: bool  # needs the model's outputs (class, confidence, vocabulary)


TESTS: tuple[DriftTest, ...] = (
    DriftTest("text_length", "text_length", "psi", "distance", False),
    DriftTest("text_length", "text_length", "ks", "p_value", False),
    DriftTest("word_count", "word_count", "ks", "p_value", False),
    DriftTest("description_empty", "description_empty", "z", "p_value", False),
    DriftTest("predicted_class", "prdtypecode", TWO_SAMPLE_CHI2, "p_value", True),
    DriftTest("confidence", "confidence", "ks", "p_value", True),
    DriftTest("oov_rate", "oov_rate", "ks", "p_value", True),
)
NUMERICAL = ["text_length", "word_count", "confidence", "oov_rate"]
CATEGORICAL = ["prdtypecode", "description_empty"]
MODEL_COLUMNS = ["prdtypecode", "confidence", "oov_rate"]


def _two_sample_chi2(reference: pd.Series, current: pd.Series, feature_type, threshold: float):
    """p-value of scipy's chi-square test of independence between sample (reference/current) and value."""
    from scipy.stats import chi2_contingency

    keys = sorted(set(reference.dropna().unique()) | set(current.dropna().unique()))
    if len(keys) < 2:
        return 1.0, False
    table = np.vstack(
        [
            reference.value_counts().reindex(keys, fill_value=0).to_numpy(),
            current.value_counts().reindex(keys, fill_value=0).to_numpy(),
        ]
    )
    p_value = float(chi2_contingency(table, correction=False).pvalue)
    return p_value, p_value < threshold


@functools.cache
def register_stattests() -> None:
    """Make ``chi2_two_sample`` known to Evidently (idempotent)."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    register_stattest(
        StatTest(
            name=TWO_SAMPLE_CHI2,
            display_name="two-sample chi-square p_value",
            allowed_feature_types=[ColumnType.Categorical],
        ),
        default_impl=_two_sample_chi2,
    )
