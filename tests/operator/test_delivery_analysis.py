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
    histogram_quantile,
    judge,
    latency_check,
    latency_quantile,
    total_variation,
)
from rakuten_operator.prometheus import growth, latency_histogram, to_signals
from tests.operator.latency_samples import histogram, latencies

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
    stable_latency=histogram(latencies(2000)),
    candidate_latency=histogram(latencies(600)),
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
    assert results["p99_latency_ratio"].value == pytest.approx(1.0, abs=0.02)
    assert results["agreement"].value == pytest.approx(0.97)
    assert results["predicted_class_shift"].value == pytest.approx(0.02)
    assert results["confidence_drop"].value == pytest.approx(0.02)
    assert results["error_rate_increase"].value == pytest.approx(0.0)


@pytest.mark.parametrize(
    "changes, broken",
    [
        ({"candidate_error_rate": 0.02}, "error_rate_increase"),
        ({"candidate_latency": histogram(latencies(600, scale=3))}, "p99_latency_ratio"),
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
    exact = with_(GOOD, candidate_error_rate=0.01, agreement=0.85, candidate_confidence=0.60)
    assert all(c.ok for c in checks(exact, Thresholds()))
    slower = with_(GOOD, candidate_latency=histogram(latencies(600, scale=3)))
    floor = latency_check(slower, 1.5).floor
    assert latency_check(slower, floor).ok and not latency_check(slower, floor * 0.999).ok


def test_signals_not_measured_pass_and_nan_counts_as_not_measured():
    empty = Signals(requests=600)
    assert all(c.ok and c.value is None for c in checks(empty, Thresholds()))
    no_stable = with_(GOOD, candidate_latency={0.01: 5.0}, stable_latency={})
    assert {c.name: c.value for c in checks(no_stable, Thresholds())}["p99_latency_ratio"] is None
    for bad in (math.nan, math.inf):  # what 0/0 and x/0 give in PromQL
        odd = with_(GOOD, agreement=bad, candidate_confidence=bad, candidate_error_rate=bad)
        results = {c.name: c for c in checks(odd, Thresholds())}
        for name in ("agreement", "confidence_drop", "error_rate_increase"):
            assert results[name].value is None and results[name].ok, (bad, results[name])
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
    slow = with_(GOOD, candidate_latency=histogram(latencies(600, scale=4)))
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


def test_a_candidate_that_fails_every_shadow_sample_is_stopped_on_its_errors():
    """A candidate the stable pods cannot score (it raises on every batch) has no scored sample:
    its failed samples count towards ``minRequests``, so the shadow is judged, not left waiting."""
    results = {"shadow_scored": 0.0, "shadow_failed": 600.0, "stable_errors": 0.0, "stable_requests": 3000.0}
    signals = to_signals(results, canary=False)
    assert signals.requests == 600 and signals.candidate_error_rate == 1.0 and signals.agreement is None
    analysis = judge(STRATEGY, -1, signals, 30)
    assert analysis.verdict == Verdict.ABORT and [c.name for c in analysis.failed] == ["error_rate_increase"]
    few = to_signals({**results, "shadow_failed": 20.0}, canary=False)
    assert judge(STRATEGY, -1, few, 30).verdict == Verdict.INSUFFICIENT


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


# --- the latency check ------------------------------------------------------------------------


def test_histogram_quantile_interpolates_within_a_bucket_as_promql():
    buckets = {0.01: 50.0, 0.02: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.005), "the first bucket starts at 0"
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.015)
    assert histogram_quantile(0.99, {0.01: 10.0, 0.02: 10.0, math.inf: 20.0}) == 0.02, "+Inf: highest bound"
    assert histogram_quantile(0.5, {0.01: 5.0, 0.02: 5.0}) is None, "no +Inf bucket"
    assert histogram_quantile(0.5, {0.01: 0.0, math.inf: 0.0}) is None, "no observations"
    assert histogram_quantile(0.5, {0.01: 60.0, 0.02: 50.0, math.inf: 100.0}) == pytest.approx(
        0.0083, abs=1e-4
    )


@pytest.mark.parametrize(
    "requests, quantile",
    [(0, 0.5), (6, 0.5), (10, 0.5), (60, 1 - 5 / 60), (100, 0.95), (250, 0.98), (500, 0.99), (10_000, 0.99)],
)
def test_the_quantile_compared_leaves_five_requests_above_it_up_to_the_p99(requests, quantile):
    assert latency_quantile(requests) == pytest.approx(quantile)


CANARY = Strategy(steps=(10, 50), step_seconds=3, canary_min_requests=60,
                  thresholds=Thresholds(max_p99_latency_ratio=2.0))  # fmt: skip
#: The stable pods' window: 450 requests, 1 % of them slow (what the scenarios read beside a canary).
STABLE_450 = histogram(latencies(450, slow=(0.03, 0.04, 0.06, 0.08)))


@pytest.mark.parametrize(
    "n, slow",
    [
        (60, (0.06, 0.07, 0.12)),
        (67, (0.055, 0.06, 0.15)),  # the good candidate rolled back under load: 3 of 67 over 50 ms
        (92, (0.02, 0.03, 0.045, 0.06)),
        (100, (0.03, 0.05, 0.06, 0.09, 0.2)),
    ],
)
def test_an_identical_candidate_with_a_few_slow_requests_passes_on_a_small_sample(n, slow):
    candidate = histogram(latencies(n, slow))
    signals = with_(GOOD, requests=n, stable_latency=STABLE_450, candidate_latency=candidate)
    # what the p99 read: the candidate's few slowest requests against the stable pods' p99
    p99_ratio = histogram_quantile(0.99, candidate) / histogram_quantile(0.99, STABLE_450)
    assert p99_ratio > 2.0, f"the situation built: the p99 ratio {p99_ratio:.2f} breaks the limit"
    check = latency_check(signals, 2.0)
    assert check.ok, check.describe()
    assert check.quantile == pytest.approx(1 - 5 / n) and check.sample == n
    assert check.value == pytest.approx(1.0, abs=0.25), "the same distribution below the outliers"
    assert judge(CANARY, 0, signals, 10).verdict == Verdict.CONTINUE


@pytest.mark.parametrize("n", [60, 100])
@pytest.mark.parametrize(
    "slower",
    [
        lambda xs: [3 * x for x in xs],  # every call three times as long
        lambda xs: [x + 0.06 for x in xs],  # every call 60 ms longer (the scenarios' slow model)
    ],
)
def test_a_slower_candidate_fails_on_a_small_sample(n, slower):
    candidate = histogram(slower(latencies(n)))
    signals = with_(GOOD, requests=n, stable_latency=STABLE_450, candidate_latency=candidate)
    analysis = judge(CANARY, 0, signals, 10)
    assert analysis.verdict == Verdict.ABORT, analysis.summary()
    assert [c.name for c in analysis.failed] == ["p99_latency_ratio"]


def test_with_enough_requests_the_check_is_the_p99_ratio():
    stable = histogram(latencies(3000, slow=(0.02,) * 30))
    candidate = histogram(latencies(600, slow=(0.02,) * 6))
    check = latency_check(with_(GOOD, stable_latency=stable, candidate_latency=candidate), 1.5)
    assert check.quantile == 0.99 and check.sample == 600
    p99 = histogram_quantile(0.99, candidate) / histogram_quantile(0.99, stable)
    assert check.value == pytest.approx(p99) and check.ok
    # 3 % of the candidate's requests slow: its p99 moves, and with 600 requests that is judged
    regressed = histogram(latencies(600, slow=(0.05,) * 18))
    broken = latency_check(with_(GOOD, stable_latency=stable, candidate_latency=regressed), 1.5)
    assert broken.quantile == 0.99 and not broken.ok, broken.describe()
    # the same share on 60 requests: 2 slow ones, fewer than the 5 above the quantile compared
    few = histogram(latencies(60, slow=(0.05,) * 2))
    assert latency_check(with_(GOOD, stable_latency=stable, candidate_latency=few), 1.5).ok


def test_both_versions_are_compared_at_the_quantile_the_smaller_sample_supports():
    """At ``canary 50%`` the stable pods may have answered fewer requests than the canary."""
    stable = histogram(latencies(80, slow=(0.06, 0.07)))
    candidate = histogram(latencies(400))
    check = latency_check(with_(GOOD, stable_latency=stable, candidate_latency=candidate), 2.0)
    assert check.sample == 80 and check.quantile == pytest.approx(1 - 5 / 80)


def test_the_latency_check_says_which_quantile_on_how_many_requests():
    signals = with_(GOOD, requests=60, stable_latency=STABLE_450,
                    candidate_latency=histogram([x + 0.06 for x in latencies(60)]))  # fmt: skip
    analysis = judge(CANARY, 0, signals, 10)
    check = analysis.failed[0]
    assert check.describe().startswith(f"p99_latency_ratio {check.value:.3g} as p91.7 of 60 requests: ")
    assert "(NOT <= 2)" in check.describe() and check.describe() in analysis.summary()
    status = {c["name"]: c for c in analysis.as_status()["checks"]}["p99_latency_ratio"]
    assert status["quantile"] == pytest.approx(0.9167) and status["requests"] == 60
    assert "quantile" not in {c["name"]: c for c in analysis.as_status()["checks"]}["agreement"]


def test_not_measured_latency_passes():
    assert latency_check(with_(GOOD, candidate_latency={}), 1.5).value is None
    assert latency_check(with_(GOOD, stable_latency={0.01: 0.0, math.inf: 0.0}), 1.5).ok


def test_the_latency_histogram_of_a_version_sums_its_pods_bucket_growth():
    def bucket(version, le, pod, values):
        labels = {"__name__": "rakuten_model_request_duration_seconds_bucket", "model_version": version,
                  "le": le, "pod": pod}  # fmt: skip
        return labels, values

    series = [
        bucket("2", "0.01", "a", [0.0, 10.0, 30.0]),
        bucket("2", "+Inf", "a", [0.0, 12.0, 33.0]),
        bucket("2", "0.01", "b", [50.0, 55.0, 2.0]),  # restarted: 5 before, 2 since
        bucket("2", "+Inf", "b", [60.0, 66.0, 2.0]),
        bucket("1", "0.01", "c", [0.0, 100.0]),
        ({"__name__": "rakuten_model_requests_total", "model_version": "2", "le": "0.01"}, [0.0, 99.0]),
    ]
    assert latency_histogram(series, "2") == {0.01: 37.0, math.inf: 41.0}
    assert latency_histogram(series, "1") == {0.01: 100.0}
    assert latency_histogram(series, "3") == {}


def test_a_candidate_one_bucket_up_is_judged_from_the_start_of_its_bucket():
    """Within a bucket the histogram does not say where the requests lie. The stable version's
    slowest 8 % take 2.45 ms, in the bucket (2, 2.5] ms, where its p92.3 interpolates to 2.02 ms;
    a candidate whose requests take 2.55 ms (1.04x) sits one bucket up, (2.5, 3] ms, and
    interpolation reads 1.47x. Judged from the start of its bucket, 2.5 ms, it reads 1.24x."""
    stable = histogram([0.0019] * 414 + [0.00245] * 36)
    candidate = histogram([0.00255] * 65)
    check = latency_check(with_(GOOD, requests=65, stable_latency=stable, candidate_latency=candidate), 1.3)
    assert check.value > 1.4, f"the situation built: interpolation reads {check.value:.2f}"
    assert check.ok and check.floor == pytest.approx(0.0025 / check.seconds[1]) and check.floor < 1.3
    assert f"bucket floor {check.floor:.3g} (ok <= 1.3)" in check.describe()
    assert {"floor", "quantile", "requests"} <= set(check.as_status())
    # two buckets up or more (here (3, 3.5] ms against (2, 2.5]): the interpolated ratio stands
    slower = histogram([0.00255] * 4 + [0.0032] * 61)
    broken = latency_check(with_(GOOD, requests=65, stable_latency=stable, candidate_latency=slower), 1.3)
    assert not broken.ok and broken.floor == broken.value > 1.3, broken.describe()
