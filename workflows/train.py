"""``rakuten-train`` WorkflowTemplate (train, gate, promote) and the weekly CronWorkflow that runs it.

One CLI call does the work: ``rakuten-mlops train --promote --output FILE`` trains, logs to
MLflow, registers a version and runs the promotion gate; FILE holds
``{"version": ..., "decision": "promoted|rejected|registered", ...}``. The template exposes
that JSON as ``result`` and its fields as ``decision`` and ``version``.
"""

from __future__ import annotations

from hera.workflows import DAG, CronWorkflow, Parameter, WorkflowTemplate
from hera.workflows.models import Mutex, Synchronization, ValueFrom, WorkflowTemplateRef

from workflows import common

NAME = common.TRAIN_TEMPLATE
WEEKLY_NAME = "rakuten-train-weekly"
WEEKLY_SCHEDULE = "0 3 * * 0"
MODELS = ["sgd", "logreg"]
RESULT_FILE = common.output_file("train.json")


def _model_parameter(**kwargs) -> Parameter:
    return Parameter(name="model", enum=list(MODELS), **kwargs)


def build_template() -> WorkflowTemplate:
    with WorkflowTemplate(
        name=NAME,
        annotations={
            "workflows.argoproj.io/description": "Train, run the promotion gate, output the decision."
        },
        entrypoint=common.TRAIN_ENTRYPOINT,
        arguments=[_model_parameter(value="sgd", description="estimator: sgd or logreg")],
        **common.workflow_defaults(deadline_seconds=4 * 3600),
    ) as template:
        train = common.cli_step(
            "train",
            ["train", "--model", "{{inputs.parameters.model}}", "--promote", "--output", RESULT_FILE],
            inputs=[_model_parameter()],
            outputs=[common.file_output("result", RESULT_FILE)],
            resources=common.TRAIN,
            timeout_seconds=3600,
            retry_strategy=common.retry(limit=2, duration="1m", max_duration="30m"),
            # Held by every training, whichever workflow runs it: two trainings never overlap.
            synchronization=Synchronization(mutexes=[Mutex(name=common.TRAINING_MUTEX)]),
        )
        with DAG(
            name=common.TRAIN_ENTRYPOINT,
            inputs=[_model_parameter()],
            outputs=[
                Parameter(
                    name="result", value_from=ValueFrom(parameter="{{tasks.train.outputs.parameters.result}}")
                ),
                Parameter(
                    name="decision",
                    value_from=ValueFrom(
                        expression="jsonpath(tasks.train.outputs.parameters.result, '$.decision')"
                    ),
                ),
                Parameter(
                    name="version",
                    value_from=ValueFrom(
                        expression="jsonpath(tasks.train.outputs.parameters.result, '$.version')"
                    ),
                ),
            ],
        ):
            train(arguments={"model": "{{inputs.parameters.model}}"})
    return template


def build_weekly() -> CronWorkflow:
    return common.cron_workflow(
        WEEKLY_NAME,
        "Weekly run of the rakuten-train WorkflowTemplate.",
        schedule=WEEKLY_SCHEDULE,
        deadline_seconds=4 * 3600,
        workflow_template_ref=WorkflowTemplateRef(name=NAME),
        arguments=[Parameter(name="model", value="sgd")],
    )
