"""``retention``: daily, keep the last N days of the prediction log and create the coming days' partitions.

The step runs ``rakuten-mlops retention``: on Postgres it drops the day partitions older than
``RAKUTEN_PREDICTION_RETENTION_DAYS`` (read from the chart's ConfigMap, ``config`` in the
values) and creates the next days' partitions ahead of traffic (the API never creates them).
"""

from __future__ import annotations

from hera.workflows import DAG, CronWorkflow

from workflows import common

NAME = "retention"
SCHEDULE = "30 0 * * *"


def build() -> CronWorkflow:
    with common.cron_workflow(
        NAME,
        "Drops prediction-log days past retention, creates the next days.",
        schedule=SCHEDULE,
        deadline_seconds=3600,
        entrypoint="main",
    ) as cron:
        retention = common.cli_step("retention", ["retention"], resources=common.LIGHT, timeout_seconds=1800)
        with DAG(name="main"):
            retention(name="retention")
    return cron
