"""The gate's rule and the rollback history, as tables of cases (no MLflow needed)."""

from __future__ import annotations

import pytest

from rakuten_mlops.training.registry import _previous_in, gate_rule, production_history


@pytest.mark.parametrize(
    ("candidate", "production", "min_f1", "min_gain", "passes", "phrase"),
    [
        (0.80, None, 0.75, 0.0, True, "no production version yet"),
        (0.70, None, 0.75, 0.0, False, "< RAKUTEN_MIN_F1"),
        (0.82, 0.81, 0.75, 0.0, True, ">= production v7"),
        (0.81, 0.81, 0.75, 0.0, True, ">= production v7"),  # a retrain on the same data may replace it
        (0.80, 0.81, 0.75, 0.0, False, "< production v7"),
        (0.815, 0.81, 0.75, 0.01, False, "+ RAKUTEN_MIN_GAIN 0.0100"),
        (0.90, 0.80, 0.95, 0.0, False, "< RAKUTEN_MIN_F1"),  # better than production, still below the bar
    ],
    ids=["first", "below-min", "better", "equal", "worse", "gain-not-met", "better-but-below-min"],
)
def test_gate_rule(candidate, production, min_f1, min_gain, passes, phrase):
    ok, reasons = gate_rule(candidate, production, None if production is None else "7", min_f1, min_gain)
    assert ok is passes
    assert any(phrase in r for r in reasons), reasons


def _history(sqlite_url: str, events: list[tuple[str, str, str]]) -> list[str]:
    from rakuten_mlops.db import engine_for, record_model_event, upgrade

    upgrade(sqlite_url)
    for event_type, version, decision in events:
        record_model_event(sqlite_url, event_type, "m", version=version, decision=decision)
    with engine_for(sqlite_url).connect() as conn:
        return production_history(conn, "m")


@pytest.mark.parametrize(
    ("events", "current", "previous"),
    [
        ([("promoted", "1", "promoted"), ("promoted", "2", "promoted")], "2", "1"),
        (
            [("promoted", "1", "promoted"), ("rejected", "2", "rejected"), ("trained", "3", "registered")],
            "1",
            None,
        ),
        (
            [("promoted", "1", "promoted"), ("forced", "2", "promoted"), ("rollback", "1", "rollback")],
            "1",
            None,
        ),
        (
            [
                ("promoted", "1", "promoted"),
                ("promoted", "2", "promoted"),
                ("promoted", "3", "promoted"),
                ("rollback", "2", "rollback"),
            ],
            "2",
            "1",
        ),
        (
            [
                ("promoted", "1", "promoted"),
                ("promoted", "2", "promoted"),
                ("rollback", "1", "rollback"),
                ("promoted", "4", "promoted"),
            ],
            "4",
            "1",
        ),
        ([("promoted", "1", "promoted"), ("promoted", "2", "promoted")], "9", "2"),  # alias moved by hand
    ],  # fmt: skip
    ids=[
        "two-promotions",
        "rejections-ignored",
        "forced-then-rolled-back",
        "walk-back",
        "promote-after-rollback",
        "alias-moved-outside",
    ],  # fmt: skip
)
def test_previous_production_version_from_history(sqlite_url, events, current, previous):
    assert _previous_in(_history(sqlite_url, events), current) == previous
