"""The chart's `retention` CronWorkflow: on by default, its schedule and pause from the values."""

from __future__ import annotations

from tests.packaging.chart_support import one


def test_retention_runs_daily_by_default_and_follows_the_values(render):
    cron = one(render.docs("kind"), "CronWorkflow", "retention")["spec"]
    assert (cron["schedules"], cron["suspend"]) == (["30 0 * * *"], False)
    step = next(t for t in cron["workflowSpec"]["templates"] if t["name"] == "retention")["container"]
    assert step["args"] == ["retention"], "the days come from RAKUTEN_PREDICTION_RETENTION_DAYS (config)"
    assert {"configMapRef": {"name": "rk-rakuten-mlops-config", "optional": True}} in step["envFrom"]
    docs = render.docs(
        "kind",
        "1.31",
        (
            "workflows.suspend.retention=true",
            "workflows.schedules.retention=15 3 * * *",
        ),
    )
    cron = one(docs, "CronWorkflow", "retention")["spec"]
    assert (cron["schedules"], cron["suspend"]) == (["15 3 * * *"], True)
