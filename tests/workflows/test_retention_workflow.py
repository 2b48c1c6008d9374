"""The rendered `retention` CronWorkflow run by the local executor with the real `rakuten-mlops`
against a real Postgres: its days come from the ConfigMap, its database from the Secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from workflows.local_executor import LocalExecutor

from tests.support import VENV_BIN
from workflows import common

pytestmark = pytest.mark.postgres


def test_retention_workflow_drops_the_days_past_the_configured_retention(rendered_objects, pg_url, tmp_path):
    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db import retention as ret

    upgrade(pg_url)
    today = datetime.now(UTC).date()
    with engine_for(pg_url).begin() as conn:
        for offset in (20, 8, 6):
            ret.create_day_partition(conn, today - timedelta(days=offset))
    executor = LocalExecutor(
        rendered_objects,
        secrets={common.POSTGRES_SECRET: {"database-url": pg_url}},
        config_maps={
            common.CONFIG_MAP: {
                "MLFLOW_TRACKING_URI": "http://unused:5000",
                "RAKUTEN_PREDICTION_RETENTION_DAYS": "7",
            }
        },
        path=[VENV_BIN],
        workdir=tmp_path,
        log=lambda _: None,
    )
    run = executor.submit("retention")
    assert run.phase == "Succeeded", run.summary()
    with engine_for(pg_url).connect() as conn:
        days = set(ret.day_partitions(conn))
    assert today - timedelta(days=6) in days and not {today - timedelta(days=n) for n in (20, 8)} & days
