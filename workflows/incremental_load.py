"""``incremental-load``: every 15 minutes, add the next slice of the source data to ``products``.

The source is the landing zone (``s3://BUCKET/PREFIX``, read with the standard AWS env); an
empty landing zone is a success ("nothing to load yet"). A directory on the source-data volume,
mounted read-only at ``/data/source``, is the alternative the chart offers.
"""

from __future__ import annotations

from hera.workflows import DAG, CronWorkflow, Parameter
from hera.workflows.models import PersistentVolumeClaimVolumeSource, Volume, VolumeMount

from workflows import common

NAME = "incremental-load"
SCHEDULE = "*/15 * * * *"

# `data load` exits 2 on bad input: retrying cannot fix a bad file, so only other failures retry.
RETRY_UNLESS_BAD_INPUT = "asInt(lastRetry.exitCode) != 2"


def build() -> CronWorkflow:
    source_volume = Volume(
        name="source-data",
        persistent_volume_claim=PersistentVolumeClaimVolumeSource(
            claim_name=common.SOURCE_DATA_CLAIM, read_only=True
        ),
    )
    with common.cron_workflow(
        NAME,
        "Adds the next slice of the source data to products.",
        schedule=SCHEDULE,
        deadline_seconds=1800,
        starting_deadline_seconds=300,
        entrypoint="main",
        arguments=[
            Parameter(
                name="source",
                value=common.LANDING_URL,
                description="s3://BUCKET/PREFIX or a directory with the official CSV layout",
            ),
            Parameter(name="initial-fraction", value="0.4", description="share loaded by the very first run"),
            Parameter(
                name="batch-unit",
                value="fraction",
                enum=["fraction", "rows"],
                description="size each later batch as a fraction of the source or as a row count",
            ),
            Parameter(name="batch-size", value="0.03", description="0.03 (fraction) or e.g. 2000 (rows)"),
        ],
        volumes=[source_volume],
    ) as cron:
        load = common.cli_step(
            "load",
            [
                "data",
                "load",
                "--source",
                "{{inputs.parameters.source}}",
                "--initial-fraction",
                "{{inputs.parameters.initial-fraction}}",
                "--batch-{{inputs.parameters.batch-unit}}",
                "{{inputs.parameters.batch-size}}",
            ],
            inputs=[
                Parameter(name="source"),
                Parameter(name="initial-fraction"),
                Parameter(name="batch-unit", enum=["fraction", "rows"]),
                Parameter(name="batch-size"),
            ],
            resources=common.LOAD,
            timeout_seconds=900,
            retry_strategy=common.retry(expression=RETRY_UNLESS_BAD_INPUT),
            extra_env=common.landing_env(),
        )
        load.volume_mounts = [VolumeMount(name="source-data", mount_path=common.SOURCE_MOUNT, read_only=True)]
        with DAG(name="main"):
            load(
                arguments={
                    name: f"{{{{workflow.parameters.{name}}}}}"
                    for name in ("source", "initial-fraction", "batch-unit", "batch-size")
                }
            )
    return cron
