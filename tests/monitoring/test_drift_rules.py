"""Fast checks without servers: windows, severity, the small-window gate, and the measurement
behind the choice of the predicted-class test."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from rakuten_mlops.monitoring.drift import compare, parse_window, severity_for
from rakuten_mlops.settings import Settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("24h", timedelta(hours=24)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
    ],
    ids=["days", "hours", "minutes", "weeks"],
)
def test_window_syntax(text, expected):
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d7", "0d", "-1d", "7 days"])
def test_bad_window_is_refused_with_the_expected_syntax(text):
    with pytest.raises(ValueError, match="like 7d"):
        parse_window(text)


@pytest.mark.parametrize(
    ("features", "severity"), [(0, "none"), (1, "low"), (2, "medium"), (3, "high"), (6, "high")]
)
def test_severity_counts_drifted_features(features, severity, settings):
    assert severity_for(features, settings) == severity


def _frame(rng: np.random.Generator, n: int, length_scale: float = 1.0) -> pd.DataFrame:
    classes = np.array([10, 40, 50, 60, 1280, 2583])
    return pd.DataFrame(
        {
            "text_length": rng.gamma(4.0, 30.0 * length_scale, n).round(),
            "word_count": rng.poisson(20 * length_scale, n).astype(float),
            "description_empty": rng.random(n) < 0.35,
            "oov_rate": rng.beta(1, 25, n),
            "prdtypecode": rng.choice(classes, n).astype(float),
            "confidence": rng.beta(8, 2, n),
        }
    )


def test_a_window_below_the_minimum_is_not_enough_data_even_when_it_looks_drifted(settings):
    rng = np.random.default_rng(0)
    reference = _frame(rng, 5000)
    tiny = _frame(rng, settings.drift_min_current_rows - 1, length_scale=5.0)
    result = compare(reference, tiny, settings)
    assert (result.status, result.severity, result.tests) == ("not_enough_data", "none", [])
    assert "not enough data" in result.message


def test_model_tests_are_skipped_when_the_window_has_too_few_rows_of_the_production_model(settings):
    rng = np.random.default_rng(1)
    reference, current = _frame(rng, 3000), _frame(rng, 1000)
    current.loc[50:, ["prdtypecode", "confidence", "oov_rate"]] = np.nan  # served by another version
    result = compare(reference, current, settings)
    assert {t.feature for t in result.tests} == {"text_length", "word_count", "description_empty"}
    assert {s["feature"] for s in result.skipped} == {"predicted_class", "confidence", "oov_rate"}


def test_same_distribution_synthetic_windows_raise_no_alarm_and_a_length_shift_is_named(settings):
    rng = np.random.default_rng(2)
    reference = _frame(rng, 5000)
    assert compare(reference, _frame(rng, 1500), settings).severity == "none"
    shifted = compare(reference, _frame(rng, 1500, length_scale=1.5), settings)
    assert {"text_length", "word_count"} <= set(shifted.drifted_features)


def _categorical_false_alarms(
    method: str, threshold: float, n_ref: int, n_cur: int, draws: int = 40
) -> float:
    """Share of same-distribution draws that Evidently's ValueDrift(method) calls drifted."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    from rakuten_mlops.data.categories import class_prior
    from rakuten_mlops.monitoring.stattests import register_stattests

    register_stattests()
    prior = class_prior()
    codes, probs = np.array(sorted(prior)), np.array([prior[c] for c in sorted(prior)])
    probs = probs / probs.sum()
    rng = np.random.default_rng(7)
    definition = DataDefinition(categorical_columns=["prdtypecode"])
    alarms = 0
    for _ in range(draws):
        ref = pd.DataFrame({"prdtypecode": rng.choice(codes, n_ref, p=probs)})
        cur = pd.DataFrame({"prdtypecode": rng.choice(codes, n_cur, p=probs)})
        snap = Report(
            [ValueDrift(column="prdtypecode", method=method, threshold=threshold)], include_tests=True
        ).run(
            current_data=Dataset.from_pandas(cur, data_definition=definition),
            reference_data=Dataset.from_pandas(ref, data_definition=definition),
        )
        alarms += snap.dict()["tests"][0]["status"] == "FAIL"
    return alarms / draws


def test_predicted_class_test_choice_is_backed_by_measured_false_alarm_rates(capsys):
    """Same-distribution class draws (27 classes, the catalogue's prior), 40 draws per case."""
    p = Settings().drift_p_value
    rates = {
        "evidently chisquare, 4000 vs 4000": _categorical_false_alarms("chisquare", p, 4000, 4000),
        "two-sample chi2, 4000 vs 4000": _categorical_false_alarms("chi2_two_sample", p, 4000, 4000),
        "jensenshannon 0.1, 4000 vs 300": _categorical_false_alarms("jensenshannon", 0.1, 4000, 300),
        "two-sample chi2, 4000 vs 300": _categorical_false_alarms("chi2_two_sample", p, 4000, 300),
    }
    with capsys.disabled():
        print(
            "\npredicted-class test, false-alarm rate on same-distribution draws (p-value threshold", p, ")"
        )
        for name, rate in rates.items():
            print(f"  {name:36s} {rate:.1%}")
    assert rates["two-sample chi2, 4000 vs 4000"] <= 0.05
    assert rates["two-sample chi2, 4000 vs 300"] <= 0.05
    # what we avoid: the goodness-of-fit test and a fixed JS distance both raise false alarms
    assert rates["evidently chisquare, 4000 vs 4000"] > rates["two-sample chi2, 4000 vs 4000"]
    assert rates["jensenshannon 0.1, 4000 vs 300"] > 0.5
