"""The control room's Monitoring page shows estimated F1 beside realized F1, and warns when the
latest estimate is not trusted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.ui.apptest import charts, main_text, open_app


def _estimate(settings, days_ago: int, f1: float, trusted: bool, realized: float | None) -> None:
    from rakuten_mlops.db import session_scope, upgrade
    from rakuten_mlops.db.models import PerformanceEstimate

    upgrade(settings.database_url)
    end = datetime.now(UTC) - timedelta(days=days_ago)
    with session_scope(settings.database_url) as session:
        session.add(
            PerformanceEstimate(
                model_version="3",
                window="1d",
                window_start=end - timedelta(days=1),
                window_end=end,
                n=900,
                f1_weighted=f1,
                f1_weighted_low=f1 - 0.04,
                f1_weighted_high=f1 + 0.04,
                f1_macro=f1 - 0.02,
                accuracy=f1 + 0.01,
                trusted=trusted,
                realized_f1_weighted=realized,
                n_labelled=0 if realized is None else 700,
                summary={},
            )  # fmt: skip
        )


def test_monitoring_shows_estimated_beside_realized_f1_and_warns_when_untrusted(empty_env):
    _estimate(empty_env, 2, 0.83, True, 0.845)
    _estimate(empty_env, 1, 0.55, False, None)
    at = open_app("monitoring")
    assert not at.exception
    text = main_text(at)
    assert "Estimated and realized F1" in text
    assert any("latest estimate of version 3 is not trusted" in w.value for w in at.main.warning)
    (table,) = [d.value for d in at.main.dataframe if "realized_f1_weighted" in d.value.columns]
    assert list(table["f1_weighted"]) == [0.55, 0.83]  # newest first
    assert list(table["trusted"]) == [False, True]
    assert table["realized_f1_weighted"].iloc[1] == 0.845
    assert len(charts(at)) == 1  # estimated, its interval and realized F1 per version over time
