"""Drift checks on a sampled prediction log (RAKUTEN_PREDICTION_LOG_SAMPLE): counts scale by
1 / sample_rate, and a window logged at several rates is tested as one uniform sample."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from rich.console import Console

from rakuten_mlops.monitoring.commands import render_drift
from rakuten_mlops.monitoring.drift import current_window, uniform_sample
from rakuten_mlops.serving.prediction_log import PredictionRecord, insert_predictions
from rakuten_mlops.settings import Settings


def _log(url: str, when: datetime, count: int, text_length: int, rate: float) -> None:
    insert_predictions(
        url,
        [
            PredictionRecord(
                f"{when:%H%M}-{rate}-{n}", when, "3", 1160, 0.8, text_length, 6, False, 0.1, None
            )
            for n in range(count)
        ],
        rate,
    )


def test_one_rate_keeps_every_row_and_mixed_rates_keep_each_in_proportion():
    assert uniform_sample(np.full(500, 0.25)).all()
    rates = np.repeat([1.0, 0.25], 20_000)
    kept = uniform_sample(rates)
    assert abs(kept[:20_000].mean() - 0.25) < 0.02 and kept[20_000:].all()


def test_a_window_logged_at_two_rates_is_tested_as_the_traffic_was(sqlite_url):
    """Half a day at rate 1 (text length 100), half at rate 0.25 (text length 300): as much traffic
    each. Unweighted the window's mean length would be 140; the tested rows give 200."""
    from rakuten_mlops.db import upgrade

    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    _log(sqlite_url, start + timedelta(hours=2), 4000, 100, 1.0)
    _log(sqlite_url, start + timedelta(hours=14), 1000, 300, 0.25)

    window = current_window(settings, start, start + timedelta(days=1), "3")

    assert (window.logged_rows, window.estimated_predictions, window.sample_rate) == (5000, 8000, 0.25)
    assert 1850 <= len(window.frame) <= 2150  # ~1000 of each half
    assert 185 <= window.frame["text_length"].mean() <= 215

    uniform = current_window(settings, start + timedelta(hours=12), start + timedelta(days=1), "3")
    assert (uniform.logged_rows, len(uniform.frame), uniform.estimated_predictions) == (1000, 1000, 4000)


def test_the_drift_output_says_how_many_predictions_a_sampled_window_stands_for():
    console = Console(record=True, width=200)
    summary = {
        "status": "not_enough_data", "model_version": "3", "window": "1d", "n_current": 150,
        "n_reference": 900, "reference_batch_ids": [1], "n_current_logged": 150, "n_current_estimated": 1500,
        "current_sample_rate": 0.1, "tests": [], "severity": "none", "message": "not enough data",
        "html_path": None, "json_path": "x.json", "mlflow_run_id": "r",
    }  # fmt: skip
    render_drift(summary, console)
    assert "150 rows logged for about 1,500 predictions; tested at sampling rate 0.1" in console.export_text()
