"""The Training page's rollout panel, from Prometheus answers (the queries run against a real
Prometheus in tests/operator/test_delivery_signals.py's setup: same metric names)."""

from __future__ import annotations

import pandas as pd
import pytest

from rakuten_mlops.ui.queries.training import ROLLOUT_QUERIES, rollout_frame


def series(**by_version: float) -> list[dict]:
    return [{"labels": {"model_version": v}, "value": x} for v, x in by_version.items()]


def test_a_candidate_in_shadow_and_a_canary_show_as_a_rollout():
    frame = rollout_frame(
        {
            "shadowed": series(**{"7": 1.0}),
            "requests": series(**{"6": 9.0, "7": 1.0}),
            "agreements": series(**{"7": 45.0}),
            "scored": series(**{"7": 50.0}),
        }
    )
    rows = {r["version"]: r for r in frame.to_dict("records")}
    assert list(rows) == ["6", "7"]
    assert rows["7"]["traffic_share"] == pytest.approx(0.1) and rows["7"]["in_shadow"]
    assert rows["7"]["shadow_agreement"] == pytest.approx(0.9)
    assert not rows["6"]["in_shadow"] and pd.isna(rows["6"]["shadow_agreement"])


def test_one_version_and_no_shadow_is_no_rollout():
    assert rollout_frame({"requests": series(**{"6": 3.0})}).empty
    assert rollout_frame({}).empty
    assert set(ROLLOUT_QUERIES) == {"shadowed", "requests", "agreements", "scored"}
