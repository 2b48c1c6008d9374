"""The delivery strategy's parsing and the judgement of one analysis (pure functions)."""

from __future__ import annotations

import math

import pytest

from rakuten_operator.analysis import (
    OnInsufficientData,
    Signals,
    Strategy,
    Thresholds,
    Verdict,
    checks,
    judge,
    total_variation,
)
from rakuten_operator.prometheus import growth, to_signals

ISSUE_SPEC = {
    "shadow": {"sampleRate": 0.2, "minRequests": 500, "maxSeconds": 600},
    "canary": {"steps": [10, 50], "stepSeconds": 300, "minRequests": 300},
    "analysis": {
        "maxErrorRateIncrease": 0.01,
        "maxP99LatencyRatio": 1.5,
        "minAgreement": 0.85,
        "maxPredictedClassShift": 0.15,
        "maxConfidenceDrop": 0.1,
    },
    "onInsufficientData": "wait",
}
STRATEGY = Strategy.from_spec(ISSUE_SPEC)
MIX = {"10": 40.0, "40": 30.0, "50": 30.0}
GOOD = Signals(
    requests=600,
    stable_error_rate=0.0,
    candidate_error_rate=0.0,
    stable_p99=0.010,
    candidate_p99=0.011,
    agreement=0.97,
    stable_classes=MIX,
    candidate_classes={"10": 38.0, "40": 32.0, "50": 30.0},
    stable_confidence=0.70,
    candidate_confidence=0.68,
)


def with_(signals: Signals, **changes) -> Signals:
    return Signals(**{**signals.__dict__, **changes})


def test_the_issue_spec_parses_to_the_defaults():
    assert Strategy() == STRATEGY
    assert Strategy.from_spec(None) is None and Strategy.from_spec({}) is None
    partial = Strategy.from_spec({"canary": {"steps": [25]}, "onInsufficientData": "abort"})
    assert partial.steps == (25,) and partial.on_insufficient_data == OnInsufficientData.ABORT
    assert partial.thresholds == Thresholds() and partial.shadow_min_requests == 500


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"canary": {"steps": [50, 10]}}, "steps"),
        ({"canary": {"steps": [0, 50]}}, "steps"),
        ({"canary": {"steps": [10, 100]}}, "steps"),
        ({"canary": {"steps": [10, 10]}}, "steps"),
        ({"shadow": {"sampleRate": 1.5}}, "sampleRate"),
        ({"onInsufficientData": "maybe"}, "onInsufficientData"),
    ],
)
def test_invalid_strategies_are_refused_naming_the_field(spec, message):
    with pytest.raises(ValueError, match=message):
        Strategy.from_spec(spec)


def test_stage_names_and_limits():
    assert [STRATEGY.stage_name(i) for i in (-1, 0, 1)] == ["shadow", "canary 10%", "canary 50%"]
    assert STRATEGY.stage_limits(-1) == (500, 0.0, 600.0)
    assert STRATEGY.stage_limits(0) == (300, 300.0, 600.0)
    short = Strategy(step_seconds=900, shadow_max_seconds=60)
    assert short.stage_limits(1) == (300, 900.0, 900.0), "a step's deadline is never before stepSeconds"
    assert not STRATEGY.is_last(-1) and not STRATEGY.is_last(0) and STRATEGY.is_last(1)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ({"1": 5}, {"1": 9}, 0.0),
        ({"1": 5}, {"2": 5}, 1.0),
        ({"1": 1, "2": 1}, {"1": 1}, 0.5),
        ({"1": 3, "2": 1}, {"1": 1, "2": 3}, 0.5),
        ({}, {"1": 1}, None),
        ({"1": 0}, {"1": 1}, None),
    ],
)
def test_total_variation_distance(a, b, expected):
    result = total_variation(a, b)
    assert result == (None if expected is None else pytest.approx(expected))


def test_a_good_candidate_passes_every_check_with_its_numbers():
    results = {c.name: c for c in checks(GOOD, Thresholds())}
    assert all(c.ok for c in results.values())
    assert results["p99_latency_ratio"].value == pytest.approx(1.1)
    assert results["agreement"].value == pytest.approx(0.97)
    assert results["predicted_class_shift"].value == pytest.approx(0.02)
    assert results["confidence_drop"].value == pytest.approx(0.02)
    assert results["error_rate_increase"].value == pytest.approx(0.0)


@pytest.mark.parametrize(
    "changes, broken",
    [
        ({"candidate_error_rate": 0.02}, "error_rate_increase"),
        ({"candidate_p99": 0.031}, "p99_latency_ratio"),
        ({"agreement": 0.5}, "agreement"),
        ({"candidate_classes": {"10": 100.0}}, "predicted_class_shift"),
        ({"candidate_confidence": 0.5}, "confidence_drop"),
    ],
)
def test_each_threshold_alone_aborts(changes, broken):
    analysis = judge(STRATEGY, -1, with_(GOOD, **changes), elapsed_seconds=10)
    assert analysis.verdict == Verdict.ABORT
    assert [c.name for c in analysis.failed] == [broken]
    assert broken in analysis.reason and "NOT" in analysis.summary()


def test_boundaries_are_inclusive():
    exact = with_(GOOD, candidate_error_rate=0.01, candidate_p99=0.015, agreement=0.85,
                  candidate_confidence=0.60)  # fmt: skip
    assert all(c.ok for c in checks(exact, Thresholds()))


def test_signals_not_measured_pass_and_nan_counts_as_not_measured():
    empty = Signals(requests=600)
    assert all(c.ok and c.value is None for c in checks(empty, Thresholds()))
    nan = with_(GOOD, candidate_p99=math.nan, stable_p99=0.0, agreement=math.inf)
    values = {c.name: c.value for c in checks(nan, Thresholds())}
    assert values["p99_latency_ratio"] is None and values["agreement"] is None
    assert judge(STRATEGY, -1, empty, 1).verdict == Verdict.CONTINUE


def test_error_rate_increase_is_relative_to_the_stable_version():
    both_bad = with_(GOOD, stable_error_rate=0.05, candidate_error_rate=0.055)
    assert judge(STRATEGY, 0, both_bad, 400).verdict == Verdict.CONTINUE
    no_stable = with_(GOOD, stable_error_rate=None, candidate_error_rate=0.02)
    assert judge(STRATEGY, 0, no_stable, 400).verdict == Verdict.ABORT


@pytest.mark.parametrize(
    "stage, elapsed, expected",
    [
        (-1, 1, Verdict.CONTINUE),  # the shadow passes as soon as it has minRequests
        (0, 299, Verdict.INSUFFICIENT),  # a canary step runs stepSeconds first
        (0, 300, Verdict.CONTINUE),
        (1, 300, Verdict.PROMOTE),  # the last step promotes
    ],
)
def test_passing_stages(stage, elapsed, expected):
    analysis = judge(STRATEGY, stage, GOOD, elapsed)
    assert analysis.verdict == expected
    assert analysis.stage == STRATEGY.stage_name(stage)


def test_a_broken_threshold_aborts_a_canary_step_before_stepseconds():
    slow = with_(GOOD, candidate_p99=0.04)
    assert judge(STRATEGY, 0, slow, 5).verdict == Verdict.ABORT


def test_few_requests_are_insufficient_even_with_a_broken_threshold():
    few = with_(GOOD, requests=20, agreement=0.1)
    analysis = judge(STRATEGY, -1, few, 30)
    assert analysis.verdict == Verdict.INSUFFICIENT
    assert "20/500 requests" in analysis.reason


@pytest.mark.parametrize(
    "mode, signals, expected",
    [
        ("wait", with_(GOOD, requests=20), Verdict.INSUFFICIENT),
        ("abort", with_(GOOD, requests=20), Verdict.ABORT),
        ("promote", with_(GOOD, requests=20), Verdict.CONTINUE),
        ("promote", with_(GOOD, requests=20, agreement=0.2), Verdict.INSUFFICIENT),
    ],
)
def test_on_insufficient_data_decides_at_the_deadline(mode, signals, expected):
    strategy = Strategy.from_spec({**ISSUE_SPEC, "onInsufficientData": mode})
    before = judge(strategy, -1, signals, 599)
    after = judge(strategy, -1, signals, 600)
    assert before.verdict == Verdict.INSUFFICIENT
    assert after.verdict == expected
    assert f"onInsufficientData: {mode}" in after.reason or "waiting" in after.reason


def test_on_insufficient_promote_at_the_last_step_promotes():
    strategy = Strategy.from_spec({**ISSUE_SPEC, "onInsufficientData": "promote"})
    assert judge(strategy, 1, with_(GOOD, requests=0), 600).verdict == Verdict.PROMOTE


def test_summary_and_status_carry_the_numbers():
    analysis = judge(STRATEGY, -1, with_(GOOD, agreement=0.04), 12)
    assert analysis.summary().startswith("abort at shadow: agreement 0.04 (NOT >= 0.85)")
    assert "n=600" in analysis.summary()
    status = analysis.as_status()
    assert status["verdict"] == "abort" and status["stage"] == "shadow"
    assert {c["name"]: c["ok"] for c in status["checks"]}["agreement"] is False


def test_growth_of_a_counter_series_counts_a_reset_from_zero():
    assert growth([]) == 0 and growth([7.0]) == 0
    assert growth([10.0, 12.0, 15.0]) == 5
    assert growth([100.0, 140.0, 0.0, 30.0]) == 70, "restarted after 140: 40 before, 30 since"
    assert growth([100.0, 140.0, 5.0, 30.0]) == 70, "the first scrape after the restart counts from 0"


def test_a_window_with_more_agreements_than_samples_is_not_judged():
    results = {"shadow_scored": 60.0, "shadow_agreements": 81.0, "shadow_failed": 0.0}
    signals = to_signals(results, canary=False)
    assert signals.inconsistent == "81 agreements counted on 60 scored samples"
    analysis = judge(Strategy(shadow_min_requests=40), -1, signals, 30)
    assert analysis.verdict == Verdict.INSUFFICIENT and "not judged" in analysis.reason
    assert "81 agreements" in analysis.summary()
    # at the deadline too: the next look reads another window
    abort_on_deadline = Strategy(shadow_min_requests=40, on_insufficient_data=OnInsufficientData.ABORT)
    assert judge(abort_on_deadline, -1, signals, 10_000).verdict == Verdict.INSUFFICIENT
    consistent = to_signals({**results, "shadow_agreements": 60.0}, canary=False)
    assert not consistent.inconsistent and consistent.agreement == 1.0
    assert judge(Strategy(shadow_min_requests=40), -1, consistent, 30).verdict == Verdict.CONTINUE
