"""scripts/kind-e2e.sh fails when an outcome it claims is missing, and passes when all are there.

No Kubernetes cluster, Argo or kind runs here, so `kubectl`, `helm`, `argo` and `curl` are
stand-ins: one small program on PATH under those four names that records each call (arguments
and stdin) and answers from a scenario, a list of rules (regular expression on the arguments ->
output and exit code; a rule may wait until an earlier call matched, which models the cluster's
state changing after `rollback`). What the real cluster does is shown only by `make kind-e2e` on
a user's machine (docs/kubernetes.md).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.slow  # runs the script end to end, some forty stand-in processes per run

SCRIPT = REPO / "scripts" / "kind-e2e.sh"
FULL = "rakuten-rakuten-mlops"
WF_LOAD, WF_TRAIN, WF_DRIFT = "incremental-load-7xk2p", "rakuten-train-p9q4z", "drift-check-m3n8v"
API_POD = f"{FULL}-api-5d9c7-abcde"

STAND_IN = """#!{python} -S
import json, os, re, sys
tool = os.path.basename(sys.argv[0])
line = " ".join(sys.argv[1:])
stdin = sys.stdin.read()
log = os.environ["STANDIN_CALLS"]
seen = [json.loads(x) for x in open(log)] if os.path.exists(log) else []
with open(log, "a") as out:
    out.write(json.dumps({{"tool": tool, "args": sys.argv[1:], "stdin": stdin}}) + "\\n")
for rule in json.load(open(os.environ["STANDIN_SCENARIO"])):
    if rule["tool"] != tool or not re.search(rule["match"], line):
        continue
    if rule.get("after") and not any(re.search(rule["after"], " ".join(c["args"])) for c in seen):
        continue
    sys.stdout.write(rule["out"])
    sys.exit(rule["rc"])
sys.stderr.write(f"stand-in {{tool}}: no answer for: {{line}}\\n")
sys.exit(97)
"""


def workflow(name: str, nodes: dict[str, dict[str, str]]) -> str:
    """`kubectl get workflow NAME -o json`: nodes by displayName with their output parameters."""
    return json.dumps(
        {
            "status": {
                "phase": "Succeeded",
                "nodes": {
                    f"{name}-{i}": {
                        "displayName": display,
                        "outputs": {"parameters": [{"name": k, "value": v} for k, v in outputs.items()]},
                    }
                    for i, (display, outputs) in enumerate(nodes.items())
                },
            }
        }
    )


def served(phase: str, version: str) -> str:
    return json.dumps({"status": {"phase": phase, "servedVersion": version, "desiredVersion": version}})


def scenario(
    *,
    load_phase: str = "Succeeded",
    first_phase: str = "Ready",
    severity: str = "high",
    retrain: bool = True,
    retrain_decision: str = "promoted",
    after_rollback: str = "1",
) -> list[dict]:
    """The all-good cluster, or one with a single outcome changed."""

    def rule(tool, match, out="", rc=0, after=None):
        return {"tool": tool, "match": match, "out": out, "rc": rc, "after": after}

    def submitted(source, name, phase, nodes):
        """`argo submit --from SOURCE` names the workflow; kubectl reads its phase and nodes."""
        return [
            rule("argo", rf"submit --from {source} -o name", name),
            rule("kubectl", rf"get workflow {name} -o jsonpath", phase),
            rule("kubectl", rf"get workflow {name} -o json$", workflow(name, nodes)),
        ]

    report = json.dumps({"severity": severity, "drift_detected": severity != "none"})
    decision = json.dumps({"retrain": retrain, "reasons": ["drift"] if retrain else []})
    return [
        rule("kubectl", r"rollout status"),
        rule("kubectl", r"get cronworkflow incremental-load .*name==\"source\"", "s3://landing/drops"),
        rule("kubectl", r"get cronworkflow incremental-load .*AWS_ACCESS_KEY_ID", f"{FULL}-landing"),
        rule("kubectl", rf"get deploy {FULL}-api -o jsonpath", "rakuten-mlops:sha-0123456789ab"),
        rule("kubectl", r"apply -f -", "pod/e2e-upload-1 created"),
        rule("kubectl", r"get pod e2e-upload-1 -o jsonpath", "Succeeded"),
        rule("kubectl", r"logs e2e-upload-1", "uploaded 3 files to s3://landing/drops\n"),
        rule("kubectl", r"delete pod e2e-upload-1"),
        *submitted("cronwf/incremental-load", WF_LOAD, load_phase, {}),
        rule("argo", rf"get {WF_LOAD}", f"{WF_LOAD} {load_phase}\n"),
        rule("kubectl", r"get pod -l .*component=api", API_POD),
        rule("kubectl", r"exec \S+ -c api -- rakuten-mlops data status --json", '{"total_products": 2000}'),
        *submitted(
            "workflowtemplate/rakuten-train -p model=sgd",
            WF_TRAIN,
            "Succeeded",
            {WF_TRAIN: {"version": "1", "decision": "promoted"}},
        ),
        # the ServedModel and /model follow the alias: v1, v2 once promoted, then the rollback's version
        rule("kubectl", r"get servedmodel", served("Ready", after_rollback), after=r"rakuten-mlops rollback"),
        rule("kubectl", r"get servedmodel", served("Ready", "2"), after=r"cronwf/drift-check"),
        rule("kubectl", r"get servedmodel", served(first_phase, "1")),
        rule("curl", r"/model$", json.dumps({"version": after_rollback}), after=r"rakuten-mlops rollback"),
        rule("curl", r"/model$", json.dumps({"version": "2"}), after=r"cronwf/drift-check"),
        rule("curl", r"/model$", json.dumps({"version": "1"})),
        rule("curl", r"-X POST \S+/predict ", '{"prdtypecode": 2462, "model_version": "1"}'),
        rule("kubectl", rf"exec -i {API_POD} -c api -- sh -ec", "600\n"),
        *submitted(
            "cronwf/drift-check",
            WF_DRIFT,
            "Succeeded",
            {
                "drift": {"report": report},
                "decide": {"decision": decision},
                "retrain": {"version": "2", "decision": retrain_decision},
            },
        ),
        rule("kubectl", r"exec \S+ -c api -- rakuten-mlops promote 2 --force"),
        rule("kubectl", r"exec \S+ -c api -- rakuten-mlops rollback"),
        rule("helm", r"^test rakuten -n rakuten --logs$", "Phase: Succeeded\n"),
    ]


@pytest.fixture
def run_script(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = STAND_IN.format(python=sys.executable)
    for tool in ("kubectl", "helm", "argo", "curl"):
        path = bin_dir / tool
        path.write_text(program)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def run(rules: list[dict]) -> tuple[subprocess.CompletedProcess, list[dict]]:
        (tmp_path / "scenario.json").write_text(json.dumps(rules))
        calls = tmp_path / "calls.jsonl"
        calls.unlink(missing_ok=True)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PYTHON": sys.executable,
            "STANDIN_SCENARIO": str(tmp_path / "scenario.json"),
            "STANDIN_CALLS": str(calls),
            "E2E_RUN_ID": "1",
            "E2E_TIMEOUT": "2",
            "E2E_POLL": "0.2",
            "E2E_FLUSH_SECONDS": "0",
        }
        proc = subprocess.run(
            ["bash", str(SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        logged = [json.loads(x) for x in calls.read_text().splitlines()] if calls.exists() else []
        return proc, logged

    return run


def called(calls: list[dict], tool: str, fragment: str) -> list[dict]:
    return [c for c in calls if c["tool"] == tool and fragment in " ".join(c["args"])]


def test_all_outcomes_present_exits_zero_after_every_step(run_script):
    proc, calls = run_script(scenario())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.rstrip().endswith("kind e2e: OK")
    for n in range(8):
        assert f"\n== {n}. " in proc.stdout, f"step {n} missing"
    upload = called(calls, "kubectl", "apply -f -")[0]["stdin"]
    assert "rakuten-mlops data upload /tmp/drop --to s3://landing/drops/e2e-1" in upload
    assert "app.kubernetes.io/component: landing-upload" in upload, "the MinIO NetworkPolicy lets it in"
    assert f"name: {FULL}-landing, key: access-key-id" in upload
    for source in ("cronwf/incremental-load", "workflowtemplate/rakuten-train", "cronwf/drift-check"):
        assert called(calls, "argo", f"submit --from {source}"), source
    for c in calls:  # every command fed through stdin must keep it open (-i) or it reads nothing
        if c["tool"] == "kubectl" and "exec" in c["args"] and c["stdin"]:
            assert "-i" in c["args"], c["args"]
    traffic = called(calls, "kubectl", "exec -i")
    assert len(traffic) == 1 and "/predict/batch" in traffic[0]["stdin"]
    assert called(calls, "kubectl", "rakuten-mlops rollback")
    assert not called(calls, "kubectl", "rakuten-mlops promote"), "the gate promoted v2 already"
    assert called(calls, "helm", "test rakuten")


def test_a_rejected_retraining_is_promoted_by_hand_before_the_rollback(run_script):
    proc, calls = run_script(scenario(retrain_decision="rejected"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    order = [
        " ".join(c["args"])
        for c in calls
        if "promote 2" in " ".join(c["args"]) or "rollback" in " ".join(c["args"])
    ]
    assert ["promote" in o for o in order] == [True, False]


@pytest.mark.parametrize(
    ("change", "message", "stopped_before"),
    [
        (
            {"load_phase": "Failed"},
            f"workflow {WF_LOAD} (--from cronwf/incremental-load) ended Failed",
            "workflowtemplate/rakuten-train",
        ),
        (
            {"first_phase": "RollingOut"},
            f"waiting for ServedModel {FULL} to report Ready with version 1",
            "cronwf/drift-check",
        ),
        (
            {"severity": "none", "retrain": False},
            "no drift detected on drifted traffic (severity: none)",
            "rakuten-mlops rollback",
        ),
        (
            {"retrain": False},
            "drift severity high but the decision is not to retrain",
            "rakuten-mlops rollback",
        ),
        (
            {"after_rollback": "2"},
            f"waiting for ServedModel {FULL} to report Ready with version 1",
            "test rakuten",
        ),
    ],
    ids=[
        "workflow-failed",
        "rollout-never-ready",
        "no-drift",
        "no-retrain-decision",
        "rollback-not-followed",
    ],
)
def test_a_missing_outcome_fails_the_script(run_script, change, message, stopped_before):
    proc, calls = run_script(scenario(**change))
    assert proc.returncode != 0
    assert f"kind e2e FAILED: {message}" in proc.stderr or message in proc.stderr, proc.stderr[-2000:]
    assert "kind e2e: OK" not in proc.stdout
    assert not [c for c in calls if stopped_before in " ".join(c["args"])], f"ran on to {stopped_before}"


def test_an_unanswered_command_fails_the_script(run_script):
    """The stand-ins answer only what the scenario names: a step the script skips is visible."""
    rules = [r for r in scenario() if not r["match"].startswith("^test rakuten")]
    proc, _ = run_script(rules)
    assert proc.returncode != 0 and "stand-in helm: no answer for: test rakuten" in proc.stderr
