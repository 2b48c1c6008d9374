"""The committed YAML is what the code renders, validates against Argo v4, and keeps the contracts."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest
import yaml

from tests.support import REPO
from tests.workflows.argo_support import RENDERED_DIR, cli_lacks, schema_errors, waiting_for
from workflows import common, render

EXPECTED_FILES = [
    "catalogue-rescore.yaml",
    "drift-check.yaml",
    "incremental-load.yaml",
    "rakuten-train-weekly.yaml",
    "rakuten-train.yaml",
    "retention.yaml",
]


def walk(value, path=""):
    """Yield (path, value) for every leaf of a parsed document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, f"{path}[{i}]")
    else:
        yield path, value


def container_templates(doc: dict) -> list[dict]:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    return [t for t in spec.get("templates", []) if "container" in t]


# ---------------------------------------------------------------- golden files


def test_committed_yaml_equals_what_the_code_renders():
    rendered = render.render_all()
    assert sorted(rendered) == EXPECTED_FILES
    committed = sorted(p.name for p in RENDERED_DIR.glob("*.yaml"))
    assert committed == EXPECTED_FILES, "stale or missing files: run `make render-workflows`"
    for name, text in rendered.items():
        assert (RENDERED_DIR / name).read_text() == text, f"{name} is stale: run `make render-workflows`"


def test_render_command_writes_the_same_files_and_check_passes(tmp_path):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "removed-workflow.yaml").write_text("kind: Old\n")
    done = subprocess.run(
        [sys.executable, "-m", "workflows", "render", "--output-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(p.name for p in out.glob("*.yaml")) == EXPECTED_FILES, "stale files are removed"
    for name in EXPECTED_FILES:
        assert (out / name).read_text() == (RENDERED_DIR / name).read_text()
        assert f"wrote {out / name}" in done.stdout
    check = subprocess.run(
        [sys.executable, "-m", "workflows", "check"], cwd=REPO, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


# ---------------------------------------------------------------- Argo v4 schemas


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_rendered_object_validates_against_argo_v4_schema(rendered, name):
    doc = rendered[name]
    assert doc["apiVersion"] == "argoproj.io/v1alpha1"
    assert schema_errors(doc) == []


def test_schema_check_is_not_vacuous(rendered):
    """The validator rejects the v3 forms the project must not ship."""
    cron = copy.deepcopy(rendered["drift-check.yaml"])
    cron["spec"]["schedule"] = cron["spec"].pop("schedules")[0]
    assert any("schedules" in e for e in schema_errors(cron))
    template = copy.deepcopy(rendered["rakuten-train.yaml"])
    train = next(t for t in template["spec"]["templates"] if t["name"] == "train")
    train["synchronization"] = {"mutex": {"name": "x"}}
    assert schema_errors(template)
    template = copy.deepcopy(rendered["rakuten-train.yaml"])
    template["spec"]["arguments"]["parameters"][0]["value"] = 5
    assert schema_errors(template)


def test_no_nulls_and_parameter_values_are_strings(rendered):
    for name, doc in rendered.items():
        for path, value in walk(doc):
            assert value is not None, f"{name}: explicit null at {path}"
            if path.endswith(".value") and ".parameters[" in path:
                assert isinstance(value, str), f"{name}: {path} = {value!r} is not a string"


# ---------------------------------------------------------------- what the platform relies on


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        ("incremental-load.yaml", "*/15 * * * *"),
        ("rakuten-train-weekly.yaml", "0 3 * * 0"),
        ("drift-check.yaml", "0 2 * * *"),
        ("catalogue-rescore.yaml", "0 1 * * *"),
        ("retention.yaml", "30 0 * * *"),
    ],
)
def test_cron_workflows_never_overlap_and_keep_short_history(rendered, name, schedule):
    spec = rendered[name]["spec"]
    assert rendered[name]["kind"] == "CronWorkflow"
    assert spec["schedules"] == [schedule]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3
    assert spec["failedJobsHistoryLimit"] == 5
    assert spec["timezone"] == "UTC"
    assert spec["workflowSpec"]["activeDeadlineSeconds"] > 0


def test_every_step_runs_the_cli_from_the_app_image_with_limits(rendered):
    steps = [(name, t) for name, doc in rendered.items() for t in container_templates(doc)]
    assert {t["name"] for _, t in steps} == {
        "load",
        "train",
        "drift",
        "estimate",
        "decide",
        "score",
        "retention",
    }
    for name, t in steps:
        c = t["container"]
        assert c["image"] == common.IMAGE and c["command"] == ["rakuten-mlops"], (name, t["name"])
        assert set(c["resources"]["requests"]) == {"cpu", "memory"}, (name, t["name"])
        assert set(c["resources"]["limits"]) == {"cpu", "memory"}, (name, t["name"])
        assert t["activeDeadlineSeconds"] > 0 and int(t["retryStrategy"]["limit"]) >= 1
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e for e in c["env"]}
        assert env["RAKUTEN_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": common.POSTGRES_SECRET,
            "key": "database-url",
        }
        assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["configMapKeyRef"]["name"] == common.CONFIG_MAP
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp"}, "writable scratch for --output files"


def test_every_workflow_runs_as_the_workflow_service_account(rendered):
    for name, doc in rendered.items():
        spec = doc["spec"].get("workflowSpec", doc["spec"])
        assert spec["serviceAccountName"] == common.SERVICE_ACCOUNT, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert doc["metadata"]["namespace"] == common.NAMESPACE, name


def test_training_template_outputs_decision_and_version_and_holds_the_mutex(rendered):
    doc = rendered["rakuten-train.yaml"]
    assert doc["kind"] == "WorkflowTemplate" and doc["metadata"]["name"] == "rakuten-train"
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    train = templates["train"]
    assert train["container"]["args"][:1] == ["train"] and "--promote" in train["container"]["args"]
    output_file = train["container"]["args"][train["container"]["args"].index("--output") + 1]
    assert train["outputs"]["parameters"] == [{"name": "result", "valueFrom": {"path": output_file}}]
    assert train["synchronization"] == {"mutexes": [{"name": common.TRAINING_MUTEX}]}
    entry = templates[doc["spec"]["entrypoint"]]
    assert {p["name"] for p in entry["outputs"]["parameters"]} == {"result", "decision", "version"}


def test_weekly_and_drift_check_run_the_training_template_by_reference(rendered):
    weekly = rendered["rakuten-train-weekly.yaml"]["spec"]["workflowSpec"]
    assert weekly["workflowTemplateRef"] == {"name": "rakuten-train"}
    drift = rendered["drift-check.yaml"]["spec"]["workflowSpec"]
    tasks = {t["name"]: t for t in drift["templates"][-1]["dag"]["tasks"]}
    assert tasks["retrain"]["templateRef"] == {"name": "rakuten-train", "template": "train-and-promote"}
    assert tasks["retrain"]["depends"] == "decide" and tasks["decide"]["depends"] == "drift && estimate"
    assert "jsonpath(tasks.decide.outputs.parameters.decision, '$.retrain')" in tasks["retrain"]["when"]


# ---------------------------------------------------------------- the chart's substitutions


def test_chart_substitution_of_placeholders_is_complete_and_safe(rendered):
    """Replacing each placeholder string (as the chart does) changes exactly the intended fields."""
    release = {
        common.IMAGE: "registry.example/team/rakuten-app:1.2.3",
        common.NAMESPACE: "ml-prod",
        common.SERVICE_ACCOUNT: "prod-rakuten-mlops-workflow",
        common.POSTGRES_SECRET: "prod-rakuten-mlops-postgres",
        common.CONFIG_MAP: "prod-rakuten-mlops-config",
        common.SOURCE_DATA_CLAIM: "prod-rakuten-mlops-source-data",
        common.LANDING_SECRET: "prod-landing-keys",
        common.LANDING_URL: "s3://prod-drops/rakuten/incoming",
    }
    for name in EXPECTED_FILES:
        text = (RENDERED_DIR / name).read_text()
        text = text.replace(common.IMAGE, release[common.IMAGE])
        text = text.replace(f"namespace: {common.NAMESPACE}\n", f"namespace: {release[common.NAMESPACE]}\n")
        for placeholder in (
            common.SERVICE_ACCOUNT,
            common.POSTGRES_SECRET,
            common.CONFIG_MAP,
            common.SOURCE_DATA_CLAIM,
            common.LANDING_SECRET,
            common.LANDING_URL,
        ):
            text = text.replace(placeholder, release[placeholder])
        doc = yaml.safe_load(text)
        assert schema_errors(doc) == []
        original = rendered[name]
        changed = {p: (a, b) for (p, a), (_, b) in zip(walk(original), walk(doc), strict=True) if a != b}
        for path, (before, after) in changed.items():
            assert release.get(before) == after, f"{name}: {path} changed from {before!r} to {after!r}"
        assert {before for before, _ in changed.values()} <= set(release)
        assert doc["metadata"]["namespace"] == "ml-prod"


# ---------------------------------------------------------------- the CLI understands every step


STEP_COMMANDS = {
    "load": ("data load", "--source", "--initial-fraction", "--batch-fraction", "--batch-rows"),
    "train": ("train", "--model", "--promote", "--output"),
    "drift": ("drift", "--window", "--output"),
    "decide": ("decide", "--output"),
}


@pytest.mark.parametrize(
    "step",
    [pytest.param(step, marks=waiting_for(*spec)) for step, spec in STEP_COMMANDS.items()],
)
def test_each_step_calls_an_existing_cli_command_with_existing_options(rendered, step):
    template = next(t for doc in rendered.values() for t in container_templates(doc) if t["name"] == step)
    args = template["container"]["args"]
    command, *_ = STEP_COMMANDS[step]
    words = command.split()
    assert args[: len(words)] == words
    options = {a.replace("{{inputs.parameters.batch-unit}}", u) for a in args for u in ("fraction", "rows")}
    options = {a for a in options if a.startswith("--")}
    assert not cli_lacks(command, *options), f"`rakuten-mlops {command}` lacks one of {sorted(options)}"


@pytest.mark.parametrize(
    ("name", "suspend"),
    [
        ("incremental-load.yaml", True),
        ("rakuten-train-weekly.yaml", True),
        ("drift-check.yaml", True),
        ("catalogue-rescore.yaml", False),  # rendered suspended: the chart's values turn it on
        ("retention.yaml", True),
    ],
)
def test_schedule_and_suspend_lines_can_be_replaced_from_helm_values(rendered, name, suspend):
    """The regexes charts/rakuten-mlops/files/workflows/README.md gives the chart change exactly these fields."""
    text = (RENDERED_DIR / name).read_text()
    text, schedules = re.subn(r"(?m)^(  schedules:\n  - ).*$", r'\g<1>"5 */6 * * 1-5"', text)
    text, suspends = re.subn(r"(?m)^  suspend: (true|false)$", f"  suspend: {str(suspend).lower()}", text)
    assert (schedules, suspends) == (1, 1)
    assert rendered[name]["spec"]["suspend"] is not suspend
    doc = yaml.safe_load(text)
    assert schema_errors(doc) == []
    assert doc["spec"]["schedules"] == ["5 */6 * * 1-5"] and doc["spec"]["suspend"] is suspend
    original = copy.deepcopy(rendered[name])
    original["spec"].update(schedules=["5 */6 * * 1-5"], suspend=suspend)
    assert doc == original


def test_check_names_a_hand_edited_or_leftover_file(tmp_path):
    render.write(tmp_path)
    assert render.stale_files(tmp_path) == []
    edited = tmp_path / "drift-check.yaml"
    edited.write_text(edited.read_text().replace("0 2 * * *", "0 4 * * *"))
    (tmp_path / "old-workflow.yaml").write_text("kind: CronWorkflow\n")
    assert render.stale_files(tmp_path) == ["drift-check.yaml", "old-workflow.yaml"]


def test_source_claim_volume_can_become_an_empty_dir_from_helm_values(rendered):
    """The regex the chart applies when the landing zone, not a PVC, is the source (workflows.source)."""
    pattern = r"(?m)^(\s*)persistentVolumeClaim:\n\s*claimName: rakuten-mlops-source-data\n\s*readOnly: true$"
    chart = (REPO / "charts" / "rakuten-mlops" / "templates" / "workflows" / "workflows.yaml").read_text()
    assert '"' + pattern.replace("\\s", "\\\\s") + '"' in chart, "the chart uses the same regex"
    text = (RENDERED_DIR / "incremental-load.yaml").read_text()
    text, count = re.subn(pattern, r"\g<1>emptyDir: {}", text)
    assert count == 1
    doc = yaml.safe_load(text)
    assert schema_errors(doc) == []
    original = copy.deepcopy(rendered["incremental-load.yaml"])
    original["spec"]["workflowSpec"]["volumes"] = [{"name": "source-data", "emptyDir": {}}]
    assert doc == original
