"""``drift-check``: daily drift report and performance estimate, retrain decision, and training only
when the decision says so."""

from __future__ import annotations

from hera.workflows import DAG, CronWorkflow, Parameter, Task
from hera.workflows.models import TemplateRef

from workflows import common, train

NAME = "drift-check"
SCHEDULE = "0 2 * * *"
DRIFT_FILE = common.output_file("drift.json")
ESTIMATE_FILE = common.output_file("estimate.json")
DECISION_FILE = common.output_file("decision.json")
# `decide --output` writes {"retrain": true|false, "reasons": [...]}.
WHEN_RETRAIN = "{{=jsonpath(tasks.decide.outputs.parameters.decision, '$.retrain') == true}}"


def build() -> CronWorkflow:
    with common.cron_workflow(
        NAME,
        "Drift report, performance estimate, retrain decision, rakuten-train if needed.",
        schedule=SCHEDULE,
        deadline_seconds=6 * 3600,
        entrypoint="main",
        arguments=[
            Parameter(name="window", value="7d", description="how far back the current data reaches"),
            Parameter(name="estimate-window", value="1d", description="window of the performance estimate"),
            Parameter(
                name="model", value="sgd", enum=list(train.MODELS), description="estimator if retraining"
            ),
        ],
    ) as cron:
        drift = common.cli_step(
            "drift",
            ["drift", "--window", "{{inputs.parameters.window}}", "--output", DRIFT_FILE],
            inputs=[Parameter(name="window")],
            outputs=[common.file_output("report", DRIFT_FILE)],
            resources=common.DRIFT,
            timeout_seconds=1800,
        )
        estimate = common.cli_step(
            "estimate",
            ["estimate", "--window", "{{inputs.parameters.window}}", "--output", ESTIMATE_FILE],
            inputs=[Parameter(name="window")],
            outputs=[common.file_output("estimate", ESTIMATE_FILE)],
            resources=common.LIGHT,
            timeout_seconds=900,
        )
        decide = common.cli_step(
            "decide",
            ["decide", "--output", DECISION_FILE],
            outputs=[common.file_output("decision", DECISION_FILE)],
            resources=common.LIGHT,
            timeout_seconds=600,
        )
        with DAG(name="main"):
            drift_task = drift(name="drift", arguments={"window": "{{workflow.parameters.window}}"})
            estimate_task = estimate(
                name="estimate", arguments={"window": "{{workflow.parameters.estimate-window}}"}
            )
            decide_task = decide(name="decide")
            retrain = Task(
                name="retrain",
                template_ref=TemplateRef(name=train.NAME, template=common.TRAIN_ENTRYPOINT),
                arguments={"model": "{{workflow.parameters.model}}"},
                when=WHEN_RETRAIN,
            )
            [drift_task, estimate_task] >> decide_task >> retrain
    return cron
