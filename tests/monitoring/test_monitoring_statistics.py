"""Measured, not assumed: the trained production model, its real lineage reference, and windows
generated with the generator's drift knobs, measured with the features the API logs."""

from __future__ import annotations

import pytest

from rakuten_mlops.data.generator import generate_frame
from rakuten_mlops.monitoring.drift import SEVERITY_LEVEL, compare
from rakuten_mlops.monitoring.reference import model_outputs, normalise

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

WINDOW_ROWS = 1500
NULL_SEEDS = range(1000, 1020)  # 20 same-distribution windows
DRIFT_SEEDS = range(2000, 2005)
# which feature must be named for each knob of the generator
MOVED = {"class-prior": "predicted_class", "vocabulary": "oov_rate", "length": "text_length"}


def _window(platform, rows: int, seed: int, drift: str | None = None, strength: float = 0.5):
    frame = generate_frame(rows, seed=seed, drift=drift, drift_strength=strength)
    return normalise(model_outputs(platform.pipeline, frame))


def test_same_distribution_windows_raise_no_alarm_over_20_seeds(platform, capsys):
    results = [
        compare(platform.reference, _window(platform, WINDOW_ROWS, seed), platform.settings)
        for seed in NULL_SEEDS
    ]
    alarms = [r for r in results if r.severity != "none"]
    with capsys.disabled():
        print(
            f"\nsame-distribution windows of {WINDOW_ROWS} predictions vs {len(platform.reference)} reference rows: "
            f"{len(alarms)}/{len(results)} with any drifted test (false-alarm rate {len(alarms) / len(results):.0%}); "
            f"severities: {sorted({r.severity for r in results})}"
        )
        for r in alarms:
            print(f"  false alarm: {r.message}")
    assert all(r.status == "ok" for r in results)
    assert not alarms, [r.message for r in alarms]


@pytest.mark.parametrize("drift", list(MOVED), ids=list(MOVED))
def test_each_drift_kind_is_detected_with_the_feature_that_moved_named(platform, drift, capsys):
    results = [
        compare(platform.reference, _window(platform, WINDOW_ROWS, seed, drift, 0.5), platform.settings)
        for seed in DRIFT_SEEDS
    ]
    named = [MOVED[drift] in r.drifted_features for r in results]
    with capsys.disabled():
        print(
            f"\n{drift} shift (strength 0.5, {WINDOW_ROWS} predictions): {MOVED[drift]} named in {sum(named)}/{len(named)}; "
            f"severities {[r.severity for r in results]}; e.g. {results[0].message}"
        )
    assert all(named)
    # a class-mix shift alone is one drifted feature (severity low); the others move several
    assert all(
        SEVERITY_LEVEL[r.severity] >= SEVERITY_LEVEL["low" if drift == "class-prior" else "high"]
        for r in results
    )


def test_mild_shifts_are_reported_with_their_detection_rate(platform, capsys):
    """Strength 0.2: smaller shifts; the moved feature is still named in most windows."""
    rates = {}
    for drift, feature in MOVED.items():
        hits = [
            feature
            in compare(
                platform.reference, _window(platform, WINDOW_ROWS, seed, drift, 0.2), platform.settings
            ).drifted_features
            for seed in range(3000, 3003)
        ]
        rates[drift] = sum(hits) / len(hits)
    with capsys.disabled():
        print("\ndetection rate at strength 0.2:", {k: f"{v:.0%}" for k, v in rates.items()})
    assert sum(rates.values()) / len(rates) >= 2 / 3


def test_small_windows_do_not_raise_noise_alarms(platform, capsys):
    settings = platform.settings
    below = compare(
        platform.reference, _window(platform, settings.drift_min_current_rows - 1, 4000), settings
    )
    assert (below.status, below.severity) == ("not_enough_data", "none")
    # just above the minimum: every test runs, and same-distribution windows stay quiet
    small = [
        compare(platform.reference, _window(platform, 250, seed), settings) for seed in range(4001, 4011)
    ]
    with capsys.disabled():
        print(f"\nwindows of 250 predictions: severities {[r.severity for r in small]}")
    assert all(r.status == "ok" and r.tests for r in small)
    assert all(SEVERITY_LEVEL[r.severity] <= SEVERITY_LEVEL["low"] for r in small)
    assert sum(r.severity != "none" for r in small) <= 1
