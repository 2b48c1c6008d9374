"""The local executor runs what the rendered workflows use, with Argo's semantics, and refuses the rest
before anything runs, naming it.

Tiny workflows of python steps, written with Hera and rendered to YAML like the real ones. What the
rendered objects themselves exercise (``when``, ``templateRef``, ``workflowTemplateRef``, ``enum``,
retry expressions, env from Secrets and ConfigMaps) is tested on them in test_rendered_wiring.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import yaml
from hera.workflows import DAG, Container, EmptyDirVolume, Parameter, RetryStrategy, Task, Workflow
from hera.workflows import WorkflowTemplate as HeraWorkflowTemplate
from hera.workflows.models import (
    EnvVar,
    EnvVarSource,
    Mutex,
    ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource,
    SecretKeySelector,
    Synchronization,
    TemplateRef,
    ValueFrom,
    Volume,
    VolumeMount,
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


def stdout(node) -> str:
    return node.attempts[-1].stdout.strip()


def claim(name: str, mount_path: str) -> tuple[Volume, VolumeMount]:
    source = PersistentVolumeClaimVolumeSource(claim_name=name)
    return Volume(name=name, persistent_volume_claim=source), VolumeMount(name=name, mount_path=mount_path)


@pytest.fixture
def executor_for(tmp_path):
    def make(docs, **kwargs) -> LocalExecutor:
        return LocalExecutor(docs, path=[VENV_BIN], workdir=tmp_path, log=lambda _: None, **kwargs)

    return make


def wiring_workflow() -> Workflow:
    """a writes JSON to a file -> b echoes a's output -> c runs when a says retrain -> d after c."""
    with Workflow(
        name="wiring",
        entrypoint="main",
        arguments=[Parameter(name="greeting", value="hello"), Parameter(name="retrain", value="true")],
    ) as w:
        write = py("write", WRITE_JSON, "{{inputs.parameters.payload}}", OUT, inputs=["payload"],
                   outputs=[Parameter(name="r", value_from=ValueFrom(path=OUT))])  # fmt: skip
        echo = py("echo", PRINT, "{{inputs.parameters.msg}}", inputs=["msg"])
        value = ValueFrom(expression="jsonpath(tasks.a.outputs.parameters.r, '$.v')")
        echoed = ValueFrom(parameter="{{tasks.a.outputs.parameters.r}}")
        with DAG(name="main", outputs=[Parameter(name="value", value_from=value),
                                       Parameter(name="echoed", value_from=echoed)]):  # fmt: skip
            payload = (
                '{"v": "{{workflow.parameters.greeting}}-x", "retrain": {{workflow.parameters.retrain}}}'
            )
            a = write(name="a", arguments={"payload": payload})
            b = echo(name="b", arguments={"msg": "{{tasks.a.outputs.parameters.r}}"})
            c = echo(name="c", arguments={"msg": "conditional ran"},
                     when="{{=jsonpath(tasks.a.outputs.parameters.r, '$.retrain') == true}}")  # fmt: skip
            d = echo(name="d", arguments={"msg": "after c"})
            a >> b >> c >> d
    return w


@pytest.mark.parametrize(("retrain", "phase"), [("true", "Succeeded"), ("false", "Skipped")])
def test_parameters_flow_through_files_to_later_tasks_outputs_and_when(executor_for, retrain, phase):
    run = executor_for(as_rendered(wiring_workflow())).submit(
        "wiring", {"greeting": "bonjour", "retrain": retrain}
    )
    assert run.phase == "Succeeded", run.summary()
    written = {"v": "bonjour-x", "retrain": retrain == "true"}
    assert json.loads(run.node("a").outputs["r"]) == written
    assert json.loads(stdout(run.node("b"))) == written
    assert run.node("b").attempts[0].argv[-1] == run.node("a").outputs["r"]
    assert run.outputs == {"value": "bonjour-x", "echoed": run.node("a").outputs["r"]}
    assert run.node("c").phase == phase
    assert stdout(run.node("d")) == "after c", "a skipped dependency lets its dependants run"


def test_unknown_parameters_and_unresolved_references_are_errors(executor_for):
    executor = executor_for(as_rendered(wiring_workflow()))
    with pytest.raises(Exception, match=r"unknown parameters \['greting'\]"):
        executor.submit("wiring", {"greting": "hi"})
    with Workflow(name="typo", entrypoint="main") as w:
        echo = py("echo", PRINT, "{{inputs.parameters.msg}}", inputs=["msg"])
        with DAG(name="main"):
            echo(name="a", arguments={"msg": "{{workflow.parameters.mesage}}"})
    run = executor_for(as_rendered(w)).submit("typo")
    assert run.phase == "Failed"
    assert "unresolved {{workflow.parameters.mesage}}" in run.node("a").message


def test_a_template_ref_to_a_missing_template_fails_the_task_with_a_clear_message(executor_for):
    with HeraWorkflowTemplate(name="lib", entrypoint="leaf") as lib:
        py("leaf", PRINT, "x")
    with Workflow(name="caller", entrypoint="main") as caller, DAG(name="main"):
        Task(name="call", template_ref=TemplateRef(name="lib", template="no-such"))
    run = executor_for(as_rendered(lib, caller)).submit("caller")
    assert run.phase == "Failed"
    assert "task 'call': lib has no template 'no-such'" in run.node("call").message


COUNT_THEN_EXIT = (
    "import sys, pathlib; f = pathlib.Path(sys.argv[2]); n = int(f.read_text()) if f.exists() else 0;"
    " f.write_text(str(n + 1)); sys.exit(0 if n + 1 >= 2 else int(sys.argv[1]))"
)


@pytest.mark.parametrize(("code", "exit_codes"), [("1", [1, 0]), ("2", [2]), ("3", [3])])
def test_retries_until_success_unless_the_expression_stops_them(executor_for, tmp_path, code, exit_codes):
    """Fails once with CODE, then succeeds; the rendered expression never retries exit 2 or 3."""
    volume, mount = claim("state", "/data")
    with Workflow(name="flaky", entrypoint="flaky", volumes=[volume]) as w:
        step = py("flaky", COUNT_THEN_EXIT, code, "/data/count", retry_strategy=RetryStrategy(
            limit="2", retry_policy="Always",
            expression="asInt(lastRetry.exitCode) != 2 && asInt(lastRetry.exitCode) != 3"))  # fmt: skip
        step.volume_mounts = [mount]
    run = executor_for(as_rendered(w), claims={"state": tmp_path}).submit("flaky")
    assert [a.exit_code for a in run.attempts] == exit_codes
    assert run.phase == ("Succeeded" if code == "1" else "Failed")


def test_active_deadline_kills_a_hanging_step(executor_for):
    with Workflow(name="hang", entrypoint="sleep") as w:
        py("sleep", "import time; time.sleep(60)", active_deadline_seconds=1)
    started = time.monotonic()
    run = executor_for(as_rendered(w)).submit("hang")
    assert time.monotonic() - started < 20
    assert run.phase == "Failed" and run.message == "activeDeadlineSeconds 1 exceeded"


def env_workflow() -> Workflow:
    with Workflow(name="env", entrypoint="show") as w:
        secret = EnvVarSource(secret_key_ref=SecretKeySelector(name="pg", key="url"))
        optional = EnvVarSource(secret_key_ref=SecretKeySelector(name="pg", key="extra", optional=True))
        py("show", "import json, os; print(json.dumps(dict(os.environ)))", env=[
            EnvVar(name="DB", value_from=secret), EnvVar(name="EXTRA", value_from=optional),
            EnvVar(name="HOME", value="/tmp/home")])  # fmt: skip
    return w


def test_env_comes_only_from_the_container_spec_and_the_stand_in_secrets(executor_for, monkeypatch):
    monkeypatch.setenv("LEAK", "host value")
    run = executor_for(as_rendered(env_workflow()), secrets={"pg": {"url": "postgresql://db"}}).submit("env")
    assert run.phase == "Succeeded", run.summary()
    seen = json.loads(stdout(run))
    assert seen["DB"] == "postgresql://db"
    assert "EXTRA" not in seen, "an optional missing key sets nothing"
    assert "LEAK" not in seen, "the host's environment must not leak into steps"
    assert seen["HOME"].endswith("/home") and seen["HOME"] != "/tmp/home", "paths under a mount are localized"


def test_a_missing_secret_fails_the_step_like_create_container_config_error(executor_for):
    run = executor_for(as_rendered(env_workflow())).submit("env")
    assert run.phase == "Error"
    assert run.message == "env DB: secretKeyRef pg/url does not exist"


def test_runs_never_overlap_and_record_their_mutexes(executor_for, tmp_path):
    """Two runs submitted at once run one after the other (what the mutex guarantees on a cluster)."""
    volume, mount = claim("log", "/log")
    with Workflow(name="locked", entrypoint="work", volumes=[volume]) as w:
        step = py(
            "work",
            "import time, sys; s = time.time(); time.sleep(0.3); open(sys.argv[1], 'w').write(f'{s} {time.time()}')",
            "/log/{{workflow.name}}",
            synchronization=Synchronization(mutexes=[Mutex(name="training")]),
        )
        step.volume_mounts = [mount]
    (tmp_path / "log").mkdir()
    executor = executor_for(as_rendered(w), claims={"log": tmp_path / "log"})
    runs = []
    threads = [threading.Thread(target=lambda: runs.append(executor.submit("locked"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = sorted(tuple(map(float, f.read_text().split())) for f in (tmp_path / "log").iterdir())
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans
    assert [r.mutexes for r in runs] == [["default/training"]] * 2


def test_parameter_values_may_use_the_creation_timestamp(executor_for):
    day = "out/{{workflow.creationTimestamp.Y}}-{{workflow.creationTimestamp.m}}"
    with Workflow(name="dated", entrypoint="p", arguments=[Parameter(name="day", value=day)]) as w:
        py("p", PRINT, "{{workflow.parameters.day}}")
    run = executor_for(as_rendered(w)).submit("dated")
    assert stdout(run) == time.strftime("out/%Y-%m", time.gmtime())


def test_every_rendered_object_is_accepted(rendered_objects, executor_for):
    """The committed YAML uses only what the executor runs, expressions included."""
    executor = executor_for(rendered_objects)
    for obj in rendered_objects:
        executor.find(obj["metadata"]["name"], obj["kind"])


@pytest.mark.parametrize(
    ("expression", "scope", "expected"),
    [
        ("jsonpath(r, '$.retrain') == true", {"r": '{"retrain": true}'}, True),
        ("jsonpath(r, '$.retrain') == true", {"r": '{"retrain": "true"}'}, False),
        ("jsonpath(r, '$.a.b')", {"r": '{"a": {"b": "x"}}'}, "x"),
        ("asInt(lastRetry.exitCode) != 2", {"lastRetry.exitCode": "2"}, False),
        ("asInt(c) != 2 && asInt(c) != 3", {"c": "3"}, False),
        ("asInt(c) != 2 && asInt(c) != 3", {"c": "1"}, True),
    ],
)
def test_expressions_the_rendered_yaml_holds(expression, scope, expected):
    assert evaluate(expression, scope) == expected


@pytest.mark.parametrize(
    "expression",
    ["a + 1", "a == 1 || b == 2", "a && b", "len(a)", "jsonpath(a, '$[0]')", "asInt(a) > 2", "a ? b : c"],
)
def test_other_expressions_are_refused(expression):
    with pytest.raises(UnsupportedFeature, match="only jsonpath"):
        evaluate(expression, {"a": "1", "b": "2", "c": "3"})


def test_cli_runs_a_rendered_file(tmp_path):
    (tmp_path / "wiring.yaml").write_text(wiring_workflow().to_yaml())
    argv = ["run-local", "wiring", "--from-dir", str(tmp_path), "-p", "greeting=cli"]
    done = subprocess.run(
        [sys.executable, "-m", "workflows", *argv], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert '"value": "cli-x"' in done.stdout and "Succeeded" in done.stdout


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
    message = refused(executor_for, w)
    assert message == "Workflow/loop.templates[main].dag.tasks[each]: withItems not supported locally"
    assert not marker.exists(), "the first task must not run before the refusal"

    with Workflow(name="stepwise", entrypoint="main") as w, Steps(name="main"):
        Step(name="one", template=py("echo", PRINT, "x"))
    assert refused(executor_for, w) == "Workflow/stepwise.templates[main]: steps not supported locally"

    @script(image="python:3.11")
    def hello():
        print("hi")

    with Workflow(name="scripted", entrypoint="hello") as w:
        hello()
    assert refused(executor_for, w) == "Workflow/scripted.templates[hello]: script not supported locally"

    with Workflow(name="tolerant", entrypoint="main") as w:
        echo = py("echo", PRINT, "x")
        with DAG(name="main"):
            echo(name="a", continue_on={"failed": True})
    assert "dag.tasks[a]: continueOn not supported locally" in refused(executor_for, w)

    with HeraWorkflowTemplate(name="stepwise-lib", entrypoint="main") as lib, Steps(name="main"):
        Step(name="one", template=py("echo", PRINT, "x"))
    with Workflow(name="caller", entrypoint="main") as caller, DAG(name="main"):
        py("first", *touch)(name="first") >> Task(
            name="call", template_ref=TemplateRef(name="stepwise-lib", template="main")
        )
    assert "WorkflowTemplate/stepwise-lib.templates[main]: steps" in refused(executor_for, lib, caller)
    assert not marker.exists(), "a referenced WorkflowTemplate is checked before anything runs"


def test_field_refs_retry_policies_expressions_and_depends_results_are_refused(executor_for):
    with Workflow(name="fieldref", entrypoint="show") as w:
        pod_name = EnvVarSource(field_ref=ObjectFieldSelector(field_path="metadata.name"))
        py("show", PRINT, "x", env=[EnvVar(name="POD", value_from=pod_name)])
    assert "container.env[POD].valueFrom: fieldRef not supported locally" in refused(executor_for, w)

    with Workflow(name="onfailure", entrypoint="flaky") as w:
        py("flaky", PRINT, "x", retry_strategy=RetryStrategy(limit="1", retry_policy="OnFailure"))
    assert "retryPolicy: 'OnFailure' not supported locally (only Always)" in refused(executor_for, w)

    with Workflow(name="either", entrypoint="flaky") as w:
        either = "asInt(lastRetry.exitCode) == 1 || asInt(lastRetry.exitCode) == 4"
        py(
            "flaky",
            PRINT,
            "x",
            retry_strategy=RetryStrategy(limit="1", retry_policy="Always", expression=either),
        )
    assert f"retryStrategy.expression: expression {either!r}: only jsonpath" in refused(executor_for, w)

    for a_depends, b_depends in ((None, "a.Failed"), ("b", None)):
        with Workflow(name="cleanup", entrypoint="main") as w:
            echo = py("echo", PRINT, "x")
            with DAG(name="main"):
                Task(name="a", template=echo, depends=a_depends)
                Task(name="b", template=echo, depends=b_depends)
        message = refused(executor_for, w)
        assert f"depends {a_depends or b_depends!r} not supported locally" in message, message
        assert "(only names of tasks listed above it, joined by &&)" in message
