"""``catalogue-rescore``: nightly, score the whole catalogue in the landing zone into the results bucket.

The step runs ``rakuten-mlops score``; its finished chunks stay under the output's S3 prefix, so a
retried pod resumes where the lost one stopped. Suspended unless the chart's values turn it on.
"""

from __future__ import annotations

from hera.workflows import DAG, CronWorkflow, Parameter

from workflows import common

NAME = "catalogue-rescore"
SCHEDULE = "0 1 * * *"
# the run's day (UTC): one output object per night, the same one when a pod is retried
RUN_DAY = "{{workflow.creationTimestamp.Y}}-{{workflow.creationTimestamp.m}}-{{workflow.creationTimestamp.d}}"

# `score` exits 2 on bad input and 3 on a missing object or version: retrying cannot fix either.
RETRY_UNLESS_BAD_INPUT = "asInt(lastRetry.exitCode) != 2 && asInt(lastRetry.exitCode) != 3"


def build() -> CronWorkflow:
    with common.cron_workflow(
        NAME,
        "Scores the landing zone's catalogue into the results bucket.",
        schedule=SCHEDULE,
        deadline_seconds=6 * 3600,
        suspend=True,
        entrypoint="main",
        arguments=[
            Parameter(
                name="input",
                value=common.CATALOGUE_URL,
                description="catalogue to score: s3://BUCKET/KEY.csv (official X layout) or .parquet",
            ),
            Parameter(
                name="output",
                value=f"{common.RESULTS_URL}/{RUN_DAY}/scores.parquet",
                description="where the scores go: s3://BUCKET/KEY.parquet or .csv",
            ),
            Parameter(name="version", value="", description="registry version (empty: production)"),
        ],
    ) as cron:
        score = common.cli_step(
            "score",
            [
                "score",
                "--input",
                "{{inputs.parameters.input}}",
                "--output",
                "{{inputs.parameters.output}}",
                "--version",
                "{{inputs.parameters.version}}",
                "--workers",
                "2",
            ],
            inputs=[Parameter(name="input"), Parameter(name="output"), Parameter(name="version")],
            resources=common.SCORE,
            timeout_seconds=4 * 3600,
            retry_strategy=common.retry(expression=RETRY_UNLESS_BAD_INPUT),
            extra_env=common.landing_env(),
        )
        with DAG(name="main"):
            score(
                arguments={
                    name: f"{{{{workflow.parameters.{name}}}}}" for name in ("input", "output", "version")
                }
            )
    return cron
