"""The local executor runs what the rendered workflows use, with Argo's semantics, and refuses the rest.

Tiny workflows of python steps, written with Hera and rendered to YAML like the real ones.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml
from hera.workflows import (
    DAG,
    ConfigMapEnvFrom,
    Container,
    CronWorkflow,
    EmptyDirVolume,
    Parameter,
    Task,
    Workflow,
    WorkflowTemplate,
)
from hera.workflows.models import (
    ConfigMapKeySelector,
    EnvVar,
    EnvVarSource,
    Mutex,
    PersistentVolumeClaimVolumeSource,
    SecretKeySelector,
    Synchronization,
    TemplateRef,
    ValueFrom,
    Volume,
    VolumeMount,
    WorkflowTemplateRef,
)
from workflows.local_executor import LocalExecutor, UnsupportedFeature, evaluate

from tests.support import REPO, VENV_BIN
from tests.workflows.argo_support import schema_errors

# Container paths are passed as whole arguments, as the real steps do (``--output /tmp/outputs/x.json``):
# the executor rewrites an argument under a mount to the local directory standing in for it.
WRITE_JSON = (
    "import json, sys, os; os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True);"
    " json.dump(json.loads(sys.argv[1]), open(sys.argv[2], 'w'))"
)
OUT = "/tmp/out/r.json"
PRINT = "import sys; print(sys.argv[1])"


def as_rendered(*objects) -> list[dict]:
    """Render Hera objects to YAML and parse them back, checking they are valid Argo v4 objects."""
    docs = [yaml.safe_load(obj.to_yaml()) for obj in objects]
    for doc in docs:
        assert schema_errors(doc) == [], doc["metadata"]["name"]
    return docs


def py(name: str, code: str, *args: str, inputs=(), outputs=None, **kwargs) -> Container:
    """A container template running ``python -c CODE ARGS`` (the executor maps /tmp to a fresh dir)."""
    return Container(
        name=name,
        image="python:3.11",
        command=["python", "-c"],
        args=[code, *args],
        inputs=[Parameter(name=i) for i in inputs],
        outputs=outputs,
        volumes=[EmptyDirVolume(name="scratch", mount_path="/tmp")],
        **kwargs,
    )


def stdout(run, node: str) -> str:
    return run.node(node).attempts[-1].stdout.strip()


def json_output(name: str = "r") -> list[Parameter]:
    return [Parameter(name=name, value_from=ValueFrom(path=OUT))]


@pytest.fixture
def executor_for(tmp_path):
    def make(docs, **kwargs) -> LocalExecutor:
        return LocalExecutor(
            docs, path=[VENV_BIN], workdir=tmp_path, backoff_scale=0.0, log=lambda _: None, **kwargs
        )

    return make


def wiring_workflow(retrain: str = "true") -> Workflow:
    with Workflow(
        name="wiring",
        entrypoint="main",
        arguments=[Parameter(name="greeting", value="hello"), Parameter(name="retrain", value=retrain)],
    ) as w:
        write = py(
            "write",
            WRITE_JSON,
            "{{inputs.parameters.payload}}",
            OUT,
            inputs=["payload"],
            outputs=json_output(),
        )
        echo = py("echo", PRINT, "{{inputs.parameters.msg}}", inputs=["msg"])
        with DAG(
            name="main",
            outputs=[
                Parameter(
                    name="value",
                    value_from=ValueFrom(expression="jsonpath(tasks.a.outputs.parameters.r, '$.v')"),
                ),
                Parameter(name="echoed", value_from=ValueFrom(parameter="{{tasks.a.outputs.parameters.r}}")),
            ],
        ):
            a = write(
                name="a",
                arguments={
                    "payload": '{"v": "{{workflow.parameters.greeting}}-x", "retrain": {{workflow.parameters.retrain}}}'
                },
            )
            b = echo(name="b", arguments={"msg": "{{tasks.a.outputs.parameters.r}}"})
            c = echo(
                name="c",
                arguments={"msg": "conditional ran"},
                when="{{=jsonpath(tasks.a.outputs.parameters.r, '$.retrain') == true}}",
            )
            d = echo(name="d", arguments={"msg": "after c"})
            a >> b >> c >> d
    return w


def test_parameters_flow_from_workflow_through_files_to_later_tasks_and_outputs(executor_for):
    run = executor_for(as_rendered(wiring_workflow())).submit("wiring", {"greeting": "bonjour"})
    assert run.phase == "Succeeded", run.summary()
    assert json.loads(run.node("a").outputs["r"]) == {"v": "bonjour-x", "retrain": True}
    assert json.loads(stdout(run, "b")) == {"v": "bonjour-x", "retrain": True}
    assert run.node("b").attempts[0].argv[-1] == run.node("a").outputs["r"]
    assert run.outputs == {"value": "bonjour-x", "echoed": run.node("a").outputs["r"]}


@pytest.mark.parametrize(("retrain", "phase"), [("true", "Succeeded"), ("false", "Skipped")])
def test_when_runs_or_skips_a_task_and_dependants_still_run(executor_for, retrain, phase):
    run = executor_for(as_rendered(wiring_workflow(retrain))).submit("wiring", {"retrain": retrain})
    assert run.phase == "Succeeded", run.summary()
    assert run.node("c").phase == phase
    assert stdout(run, "d") == "after c", "a skipped dependency lets its dependants run"
    if phase == "Succeeded":
        assert stdout(run, "c") == "conditional ran"
    else:
        assert run.node("c").attempts == [] and "false" in run.node("c").message


def test_enum_and_unknown_parameters_are_refused(executor_for):
    with Workflow(
        name="enum", entrypoint="p", arguments=[Parameter(name="model", value="sgd", enum=["sgd", "logreg"])]
    ) as w:
        py("p", PRINT, "{{workflow.parameters.model}}")
    executor = executor_for(as_rendered(w))
    assert executor.submit("enum", {"model": "logreg"}).phase == "Succeeded"
    with pytest.raises(Exception, match="not one of"):
        executor.submit("enum", {"model": "xgboost"})
    with pytest.raises(Exception, match="unknown parameters"):
        executor.submit("enum", {"modle": "sgd"})


def library_template() -> WorkflowTemplate:
    """A WorkflowTemplate whose DAG calls its own container template by name."""
    with WorkflowTemplate(
        name="lib", entrypoint="pipeline", arguments=[Parameter(name="payload", value="{}")]
    ) as wt:
        leaf = py(
            "leaf",
            WRITE_JSON,
            "{{inputs.parameters.payload}}",
            OUT,
            inputs=["payload"],
            outputs=json_output(),
        )
        with DAG(
            name="pipeline",
            inputs=[Parameter(name="payload")],
            outputs=[
                Parameter(
                    name="v",
                    value_from=ValueFrom(expression="jsonpath(tasks.leaf.outputs.parameters.r, '$.v')"),
                )
            ],
        ):
            leaf(name="leaf", arguments={"payload": "{{inputs.parameters.payload}}"})
    return wt


def test_template_ref_runs_the_referenced_templates_own_tree(executor_for):
    with Workflow(name="caller", entrypoint="main") as caller, DAG(name="main"):
        call = Task(
            name="call",
            template_ref=TemplateRef(name="lib", template="pipeline"),
            arguments={"payload": '{"v": "via-ref"}'},
        )
        after = py("after", PRINT, "{{inputs.parameters.v}}", inputs=["v"])(
            name="after", arguments={"v": "{{tasks.call.outputs.parameters.v}}"}
        )
        call >> after
    run = executor_for(as_rendered(library_template(), caller)).submit("caller")
    assert run.phase == "Succeeded", run.summary()
    assert run.node("call.leaf").phase == "Succeeded"
    assert run.node("call").outputs == {"v": "via-ref"}
    assert stdout(run, "after") == "via-ref"


def test_a_broken_template_ref_fails_the_task_with_a_clear_message(executor_for):
    with Workflow(name="caller", entrypoint="main") as caller, DAG(name="main"):
        Task(
            name="call",
            template_ref=TemplateRef(name="lib", template="no-such"),
            arguments={"payload": "{}"},
        )
    run = executor_for(as_rendered(library_template(), caller)).submit("caller")
    assert run.phase == "Failed"
    assert "has no template 'no-such'" in run.node("call").message


def test_cron_workflow_with_workflow_template_ref_merges_arguments(executor_for):
    cron = CronWorkflow(
        name="weekly",
        schedules=["0 3 * * 0"],
        concurrency_policy="Forbid",
        workflow_template_ref=WorkflowTemplateRef(name="lib"),
        arguments=[Parameter(name="payload", value='{"v": "from-cron"}')],
    )
    run = executor_for(as_rendered(library_template(), cron)).submit("weekly")
    assert run.phase == "Succeeded", run.summary()
    assert run.outputs == {"v": "from-cron"}
    assert run.node("leaf").inputs == {"payload": '{"v": "from-cron"}'}


COUNT_THEN_EXIT = (
    "import sys, pathlib; f = pathlib.Path(sys.argv[3]); n = int(f.read_text()) if f.exists() else 0;"
    " f.write_text(str(n + 1)); sys.exit(0 if n + 1 >= int(sys.argv[1]) else int(sys.argv[2]))"
)


def retry_workflow(expression: str | None = None) -> Workflow:
    from hera.workflows import RetryStrategy

    with Workflow(
        name="flaky",
        entrypoint="flaky",
        arguments=[Parameter(name="succeed-on", value="2"), Parameter(name="exit-code", value="1")],
        volumes=[
            Volume(name="data", persistent_volume_claim=PersistentVolumeClaimVolumeSource(claim_name="state"))
        ],
    ) as w:
        step = py(
            "flaky",
            COUNT_THEN_EXIT,
            "{{workflow.parameters.succeed-on}}",
            "{{workflow.parameters.exit-code}}",
            "/data/count",
            retry_strategy=RetryStrategy(limit="2", retry_policy="OnFailure", expression=expression),
        )
        step.volume_mounts = [VolumeMount(name="data", mount_path="/data")]
    return w


def test_retry_strategy_retries_failures_until_success(executor_for, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    run = executor_for(as_rendered(retry_workflow()), claims={"state": state}).submit("flaky")
    assert run.phase == "Succeeded", run.summary()
    assert [a.exit_code for a in run.root.attempts] == [1, 0]
    assert (state / "count").read_text() == "2"


def test_retry_expression_stops_retrying_on_bad_input(executor_for, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    executor = executor_for(
        as_rendered(retry_workflow("asInt(lastRetry.exitCode) != 2")), claims={"state": state}
    )
    run = executor.submit("flaky", {"succeed-on": "5", "exit-code": "2"})
    assert run.phase == "Failed"
    assert [a.exit_code for a in run.root.attempts] == [2], "exit 2 must not be retried"
    (state / "count").unlink()
    run = executor.submit("flaky", {"succeed-on": "5", "exit-code": "1"})
    assert [a.exit_code for a in run.root.attempts] == [1, 1, 1], "limit 2 = three attempts"


def test_active_deadline_kills_a_hanging_step(executor_for):
    with Workflow(name="hang", entrypoint="sleep") as w:
        py("sleep", "import time; time.sleep(60)", active_deadline_seconds=1)
    started = time.monotonic()
    run = executor_for(as_rendered(w)).submit("hang")
    assert time.monotonic() - started < 20
    assert run.phase == "Failed" and "activeDeadlineSeconds" in run.root.message


def env_workflow() -> Workflow:
    with Workflow(name="env", entrypoint="show") as w:
        py(
            "show",
            "import json, os; print(json.dumps({k: os.environ.get(k) for k in ['DB', 'TRACKING', 'EXTRA', 'HOME', 'LEAK']}))",  # noqa: E501
            env=[
                EnvVar(
                    name="DB", value_from=EnvVarSource(secret_key_ref=SecretKeySelector(name="pg", key="url"))
                ),
                EnvVar(
                    name="TRACKING",
                    value_from=EnvVarSource(
                        config_map_key_ref=ConfigMapKeySelector(name="cfg", key="tracking")
                    ),
                ),
                EnvVar(name="HOME", value="/tmp/home"),
            ],
            env_from=[ConfigMapEnvFrom(name="cfg-extra", optional=True)],
        )
    return w


def test_env_comes_only_from_the_container_spec_and_the_supplied_secrets(executor_for, monkeypatch):
    monkeypatch.setenv("LEAK", "host value")
    executor = executor_for(
        as_rendered(env_workflow()),
        secrets={"pg": {"url": "postgresql://db"}},
        config_maps={"cfg": {"tracking": "http://mlflow"}, "cfg-extra": {"EXTRA": "1"}},
    )
    run = executor.submit("env")
    assert run.phase == "Succeeded", run.summary()
    seen = json.loads(run.root.attempts[-1].stdout)
    assert seen["DB"] == "postgresql://db" and seen["TRACKING"] == "http://mlflow" and seen["EXTRA"] == "1"
    assert seen["LEAK"] is None, "the host's environment must not leak into steps"
    assert seen["HOME"].endswith("/home") and seen["HOME"] != "/tmp/home", "paths under a mount are localized"


def test_a_missing_secret_fails_the_step_like_create_container_config_error(executor_for):
    run = executor_for(as_rendered(env_workflow()), config_maps={"cfg": {"tracking": "x"}}).submit("env")
    assert run.phase == "Error"
    assert "secretKeyRef pg/url does not exist" in run.root.message


def test_an_unresolved_reference_is_an_error_not_an_empty_string(executor_for):
    with Workflow(name="typo", entrypoint="main") as w:
        echo = py("echo", PRINT, "{{inputs.parameters.msg}}", inputs=["msg"])
        with DAG(name="main"):
            echo(name="a", arguments={"msg": "{{workflow.parameters.mesage}}"})
    run = executor_for(as_rendered(w)).submit("typo")
    assert run.phase == "Failed"
    assert "unresolved {{workflow.parameters.mesage}}" in run.node("a").message


def test_mutex_serializes_concurrent_runs(executor_for, tmp_path):
    """Two runs of a step holding the same mutex never overlap; without it they do."""

    def workflow(name: str, mutex: bool) -> Workflow:
        with Workflow(
            name=name,
            entrypoint="work",
            volumes=[
                Volume(
                    name="log", persistent_volume_claim=PersistentVolumeClaimVolumeSource(claim_name="log")
                )
            ],
        ) as w:
            step = py(
                "work",
                "import time, sys; s = time.time(); time.sleep(0.8);"
                " open(sys.argv[1], 'a').write(f'{s} {time.time()}\\n')",
                "/log/{{workflow.name}}",
                synchronization=Synchronization(mutexes=[Mutex(name=f"{name}-lock")]) if mutex else None,
            )
            step.volume_mounts = [VolumeMount(name="log", mount_path="/log")]
        return w

    for mutex in (True, False):
        log = tmp_path / f"log-{mutex}"
        log.mkdir()
        name = f"locked-{mutex}".lower()
        executor = executor_for(as_rendered(workflow(name, mutex)), claims={"log": log})
        threads = [threading.Thread(target=executor.submit, args=(name,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        spans = sorted(tuple(map(float, f.read_text().split())) for f in log.iterdir())
        assert len(spans) == 2
        overlap = spans[0][1] > spans[1][0]
        assert overlap is (not mutex), f"mutex={mutex} spans={spans}"


@pytest.mark.parametrize(
    ("expression", "scope", "expected"),
    [
        ("jsonpath(r, '$.retrain') == true", {"r": '{"retrain": true}'}, True),
        ("jsonpath(r, '$.retrain') == true", {"r": '{"retrain": "true"}'}, False),
        ("jsonpath(r, '$.a.b')", {"r": '{"a": {"b": "x"}}'}, "x"),
        ("asInt(lastRetry.exitCode) != 2", {"lastRetry.exitCode": "2"}, False),
        ("asInt(lastRetry.exitCode) != 2", {"lastRetry.exitCode": "1"}, True),
    ],
)
def test_expressions_the_rendered_yaml_holds(expression, scope, expected):
    assert evaluate(expression, scope) == expected


@pytest.mark.parametrize(
    "expression",
    ["a + 1", "a == 1 && b == 2", "len(a)", "jsonpath(a, '$[0]')", "asInt(a) > 2", "a ? b : c"],
)
def test_other_expressions_are_refused(expression):
    with pytest.raises(UnsupportedFeature, match="only NAME, jsonpath|only \$.key paths"):
        evaluate(expression, {"a": "1", "b": "2", "c": "3"})


def test_cli_runs_a_rendered_file(tmp_path):
    import subprocess
    import sys

    (tmp_path / "wiring.yaml").write_text(wiring_workflow().to_yaml())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "workflows",
            "run-local",
            "wiring",
            "--from-dir",
            str(tmp_path),
            "-p",
            "greeting=cli",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert '"value": "cli-x"' in done.stdout
    assert "c" in done.stdout and "Succeeded" in done.stdout


def refused(executor_for, *objects) -> str:
    with pytest.raises(UnsupportedFeature) as info:
        executor_for(as_rendered(*objects)).submit(objects[-1].name)
    return str(info.value)


def test_loops_steps_scripts_and_continue_on_are_refused_before_anything_runs(executor_for, tmp_path):
    from hera.workflows import Step, Steps, script

    marker = tmp_path / "ran"
    touch = ("import pathlib, sys; pathlib.Path(sys.argv[1]).touch()", str(marker))
    with Workflow(name="loop", entrypoint="main") as w:
        first, echo = py("first", *touch), py("echo", PRINT, "{{inputs.parameters.msg}}", inputs=["msg"])
        with DAG(name="main"):
            first(name="first") >> echo(name="each", arguments={"msg": "{{item}}"}, with_items=["a", "b"])
    assert "task field(s) withItems" in refused(executor_for, w)
    assert not marker.exists(), "the first task must not run before the refusal"

    with Workflow(name="stepwise", entrypoint="main") as w:
        echo = py("echo", PRINT, "x")
        with Steps(name="main"):
            Step(name="one", template=echo)
    assert "template field(s) steps" in refused(executor_for, w)

    @script(image="python:3.11")
    def hello():
        print("hi")

    with Workflow(name="scripted", entrypoint="hello") as w:
        hello()
    assert "template field(s) script" in refused(executor_for, w)

    with Workflow(name="tolerant", entrypoint="main") as w:
        echo = py("echo", PRINT, "x")
        with DAG(name="main"):
            echo(name="a", continue_on={"failed": True})
    assert "task field(s) continueOn" in refused(executor_for, w)


def test_field_refs_retry_policies_and_depends_results_are_refused(executor_for):
    from hera.workflows import RetryStrategy
    from hera.workflows.models import ObjectFieldSelector

    with Workflow(name="fieldref", entrypoint="show") as w:
        py("show", PRINT, "x", env=[EnvVar(name="POD", value_from=EnvVarSource(
            field_ref=ObjectFieldSelector(field_path="metadata.name")))])  # fmt: skip
    assert "env source field(s) fieldRef" in refused(executor_for, w)

    with Workflow(name="onerror", entrypoint="flaky") as w:
        py("flaky", PRINT, "x", retry_strategy=RetryStrategy(limit="1", retry_policy="OnError"))
    assert "retryPolicy OnError" in refused(executor_for, w)

    with Workflow(name="cleanup", entrypoint="main") as w:
        echo = py("echo", PRINT, "x")
        with DAG(name="main"):
            Task(name="a", template=echo)
            Task(name="b", template=echo, depends="a.Failed")
    assert "depends 'a.Failed'" in refused(executor_for, w)
