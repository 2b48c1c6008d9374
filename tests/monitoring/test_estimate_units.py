"""The estimator's parts as plain functions: calibration measures, the gate's calibration rule,
the stored probability layout, the expected confusion matrix and its interval, trust checks."""

from __future__ import annotations

import numpy as np
import pytest

from rakuten_mlops.model.calibration import reliability
from rakuten_mlops.model.probabilities import ENCODED_BYTES, decode_many, encode, expand
from rakuten_mlops.monitoring.estimate import Reference, class_mix_distance, trust_checks
from rakuten_mlops.monitoring.performance import estimate, expected_confusion, realized, scores
from rakuten_mlops.training.registry import gate_rule

CLASSES = np.array([10, 40, 50, 60, 2583])


def calibrated_set(n: int, seed: int, concentration: float = 0.4):
    """Probabilities and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.full(len(CLASSES), concentration), size=n)
    labels = CLASSES[
        np.minimum((proba.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1), len(CLASSES) - 1)
    ]
    return proba, labels


def test_ece_of_a_calibrated_set_is_its_sampling_floor_and_an_overconfident_one_is_caught():
    proba, labels = calibrated_set(2000, 99)
    rel = reliability(proba, CLASSES, labels)
    rng = np.random.default_rng(3)
    ece = [
        reliability(
            proba, CLASSES, CLASSES[np.minimum((proba.cumsum(axis=1) < rng.random(2000)[:, None]).sum(1), 4)]
        ).ece
        for _ in range(20)
    ]
    assert np.mean(ece) == pytest.approx(rel.floor, rel=0.2)  # the floor is what sampling alone gives
    sharp = proba**4 / (proba**4).sum(axis=1, keepdims=True)  # same ranking, overconfident
    over = reliability(sharp, CLASSES, labels)
    assert over.excess > 0.1 and over.ece > rel.ece + 0.1
    assert sum(c["rows"] for c in over.per_class.values()) == 2000
    assert all(c["gap"] > 0 for c in over.per_class.values() if c["rows"] > 50)  # overconfident per class


@pytest.mark.parametrize(
    ("ece", "max_ece", "passes", "phrase"),
    [(0.02, 0.05, True, "0.0200 (ECE above the sampling floor) <= RAKUTEN_MAX_ECE 0.0500"),
     (0.08, 0.05, False, "0.0800 (ECE above the sampling floor) > RAKUTEN_MAX_ECE 0.0500"),
     (None, 0.05, True, "no production version yet")],
    ids=["calibrated", "miscalibrated", "not-measured"],
)  # fmt: skip
def test_gate_refuses_a_miscalibrated_candidate(ece, max_ece, passes, phrase):
    ok, reasons = gate_rule(0.85, None, None, 0.75, 0.0, ece=ece, max_ece=max_ece)
    assert ok is passes and any(phrase in r for r in reasons), reasons


def test_probabilities_round_trip_through_the_compact_layout():
    codes, probs = [2583, 10, 60, 40, 50], [0.61, 0.2, 0.1, 0.05, 0.04]
    blob = encode(codes, probs)
    assert len(blob) == ENCODED_BYTES == 20
    got_codes, got_p = decode_many([blob, encode([40, 10], [0.9, 0.1])])  # a two-class model pads
    assert got_codes[0].tolist() == codes and np.allclose(got_p[0], probs, atol=1e-3)
    assert got_codes[1].tolist() == [40, 10, 0, 0, 0] and got_p[1][2:].tolist() == [0, 0, 0]
    full = expand(got_codes, got_p, CLASSES)
    assert np.allclose(full.sum(axis=1), 1.0)
    assert full[0, 4] == pytest.approx(0.61, abs=1e-3)  # 2583 is the last of the sorted classes
    assert full[1].tolist() == pytest.approx([0.1, 0.9, 0.0, 0.0, 0.0], abs=1e-3)


def test_expected_confusion_gives_the_mean_realized_scores_and_an_interval_that_covers():
    proba, _ = calibrated_set(3000, 5, concentration=0.3)
    result = estimate(proba, CLASSES, draws=200)
    assert expected_confusion(proba).sum() == pytest.approx(3000)
    rng = np.random.default_rng(7)
    realized_f1, covered = [], 0
    for _ in range(40):  # windows whose labels really are drawn from the probabilities
        labels = CLASSES[np.minimum((proba.cumsum(axis=1) < rng.random(3000)[:, None]).sum(axis=1), 4)]
        value = realized(labels, CLASSES[proba.argmax(axis=1)])["f1_weighted"]
        realized_f1.append(value)
        covered += result.intervals["f1_weighted"][0] <= value <= result.intervals["f1_weighted"][1]
    assert result.f1_weighted == pytest.approx(np.mean(realized_f1), abs=0.005)
    assert covered >= 32  # 90 % interval: 36 of 40 expected
    assert result.accuracy == pytest.approx(proba.max(axis=1).mean())
    certain = np.eye(len(CLASSES))[[0, 1, 2, 3, 4, 0]]
    assert scores(expected_confusion(certain))["f1_weighted"] == pytest.approx(1.0)


def test_trust_checks_flag_unknown_words_moved_confidence_and_class_mix():
    ref = Reference(oov_rate=0.05, confidence=0.8, class_shares={10: 0.5, 40: 0.5})
    calm = trust_checks(np.full(100, 0.06), np.full(100, 0.79), ref, np.array([10, 40] * 50))
    assert all(c["ok"] for c in calm)
    words = trust_checks(np.full(100, 0.30), np.full(100, 0.79), ref, np.array([10, 40] * 50))
    assert [c["check"] for c in words if not c["ok"]] == ["oov_rate"]
    shifted = trust_checks(np.full(100, 0.05), np.full(100, 0.6), ref, np.array([60] * 100))
    assert {c["check"] for c in shifted if not c["ok"]} == {"confidence", "class_mix"}
    assert class_mix_distance(np.array([60] * 100), ref.class_shares) == pytest.approx(1.0)
    (unknown,) = trust_checks(np.zeros(3), np.ones(3), None)
    assert unknown["ok"] is False and "not measured" in unknown["reason"]
    tags = {"reference_oov_rate": "0.05", "reference_confidence": "0.8", "ece_excess": "0.03",
            "reference_class_shares": '{"10": 0.5, "40": 0.5}'}  # fmt: skip
    assert Reference.from_metrics(tags) == Reference(0.05, 0.8, {10: 0.5, 40: 0.5}, 0.03)
