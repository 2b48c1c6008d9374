"""Unit tests of the operator's plain decisions (no cluster, no MLflow, no kopf)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from rakuten_operator.rollout import (
    HISTORY_LIMIT,
    DeploymentView,
    Phase,
    RolloutStatus,
    ServedModelSpec,
    StepKind,
    needs_pin,
    next_step,
    pin_patch,
    read_deployment,
    rollback_target,
    rollout_verdict,
    transition,
    wait_seconds,
)
from tests.operator.operator_harness import api_deployment

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.UTC)
SPEC = ServedModelSpec(deployment="api", poll_seconds=30, rollout_timeout_seconds=600)


def view(version: str | None = "1", **overrides: Any) -> DeploymentView:
    """A Deployment of 2 replicas, fully rolled out on ``version`` unless overridden."""
    fields = dict(
        name="api",
        generation=2,
        observed_generation=2,
        replicas=2,
        updated_replicas=2,
        available_replicas=2,
        total_replicas=2,
        pinned_version=version,
        annotated_version=version,
        deadline_exceeded=None,
    )
    fields.update(overrides)
    return DeploymentView(**fields)


def status(
    phase: Phase | None = None, desired=None, served=None, previous=None, started=None
) -> RolloutStatus:
    return RolloutStatus(
        phase=phase,
        desired_version=desired,
        served_version=served,
        previous_version=previous,
        rollout_started_at=started,
    )


def ago(seconds: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- reading and pinning a Deployment ---------------------------------------------------------


def test_read_deployment_finds_the_pin_and_the_progress_deadline():
    body = api_deployment("api", "3")
    body["metadata"].update(generation=5)
    body["status"] = {
        "observedGeneration": 5,
        "replicas": 3,
        "updatedReplicas": 1,
        "availableReplicas": 2,
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet api-7f has timed out progressing.",
            }
        ],
    }
    seen = read_deployment(body, "api")
    assert (seen.pinned_version, seen.annotated_version) == ("3", "3")
    assert (seen.generation, seen.observed_generation, seen.updated_replicas) == (5, 5, 1)
    assert seen.deadline_exceeded == "ReplicaSet api-7f has timed out progressing."


@pytest.mark.parametrize(
    ("env", "annotation", "wanted", "expected"),
    [
        ("2", "2", "2", False),
        ("1", "1", "2", True),
        ("2", None, "2", True),  # someone removed the annotation: re-pin both
        (None, None, "1", True),  # the chart's Deployment before the operator's first patch
    ],
    ids=["pinned", "other-version", "annotation-missing", "never-pinned"],
)
def test_needs_pin_only_when_env_or_annotation_differs(env, annotation, wanted, expected):
    assert needs_pin(view(env, annotated_version=annotation), wanted) is expected


def test_pin_patch_changes_one_env_var_and_keeps_everything_else():
    body = api_deployment("api", "1")
    body["metadata"]["resourceVersion"] = "4242"
    patch = pin_patch(body, "api", "2")
    containers = patch["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["api", "log-shipper"]
    assert containers[0]["env"] == [
        {"name": "RAKUTEN_MODEL_POLL_SECONDS", "value": "0"},
        {"name": "RAKUTEN_MODEL_VERSION", "value": "2"},
    ]
    assert containers[1] == body["spec"]["template"]["spec"]["containers"][1]
    assert patch["spec"]["template"]["metadata"]["annotations"] == {"mlops.rakuten.io/model-version": "2"}
    assert patch["metadata"] == {"resourceVersion": "4242"}, (
        "refused by the API server if it changed meanwhile"
    )
    assert body["spec"]["template"]["spec"]["containers"][0]["env"][-1]["value"] == "1", "input untouched"


def test_pin_patch_names_the_containers_when_the_target_is_missing():
    with pytest.raises(LookupError, match="api, log-shipper"):
        pin_patch(api_deployment("api", "1"), "server", "2")


# --- rollout verdicts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deployment", "started_seconds_ago", "state", "reason_part"),
    [
        (view("2"), 5, "complete", "2/2 replicas available"),
        (view("2", observed_generation=1), 5, "progressing", ""),  # controller has not seen the patch
        (view("2", updated_replicas=1, available_replicas=2, total_replicas=3), 5, "progressing", ""),
        (view("2", available_replicas=1), 5, "progressing", ""),
        (view("2", updated_replicas=1, total_replicas=3), 601, "failed", "timed out after 600s"),
        (view("2", updated_replicas=1, deadline_exceeded="ReplicaSet timed out"), 5, "failed", "deadline"),
        (view("3"), 5, "failed", "no longer pins version 2"),
    ],
    ids=["complete", "not-observed", "old-pods-left", "not-available", "timeout", "deadline", "re-pinned"],
)
def test_rollout_verdict(deployment, started_seconds_ago, state, reason_part):
    started = NOW - dt.timedelta(seconds=started_seconds_ago)
    verdict = rollout_verdict(deployment, "2", started, NOW, 600)
    assert verdict.state == state
    assert reason_part in verdict.reason


@pytest.mark.parametrize(
    ("previous", "failed", "target"),
    [("1", "2", "1"), (None, "2", None), ("", "2", None), ("2", "2", None)],
    ids=["previous", "first-rollout", "cleared", "same-as-failed"],
)
def test_rollback_target_is_the_last_version_that_served(previous, failed, target):
    assert rollback_target(status(previous=previous), failed) == target


# --- the state machine ---------------------------------------------------------------------------

CASES = [
    # id, status, alias, deployment, expected kind, version, previous
    ("first-look-already-pinned", status(), "1", view("1"), StepKind.START, "1", None),
    ("first-look-new-version", status(), "2", view("1"), StepKind.START, "2", "1"),
    ("steady", status(Phase.READY, "2", "2"), "2", view("2"), StepKind.NOTHING, None, None),
    ("promotion", status(Phase.READY, "1", "1"), "2", view("1"), StepKind.START, "2", "1"),
    # a hand edit of the Deployment is undone; the fallback stays what the status remembers
    ("drifted-deployment", status(Phase.READY, "2", "2"), "2", view("1"), StepKind.START, "2", None),
    (
        "rollout-done",
        status(Phase.ROLLING_OUT, "2", "1", "1", ago(10)),
        "2",
        view("2"),
        StepKind.READY,
        "2",
        "1",
    ),
    (
        "rollout-in-flight",
        status(Phase.ROLLING_OUT, "2", "1", "1", ago(10)),
        "2",
        view("2", updated_replicas=1, total_replicas=3),
        StepKind.WAIT,
        "2",
        "1",
    ),
    (
        "rollout-timed-out",
        status(Phase.ROLLING_OUT, "2", "1", "1", ago(601)),
        "2",
        view("2", updated_replicas=1, total_replicas=3),
        StepKind.ROLLBACK,
        "1",
        "2",
    ),
    (
        "first-rollout-timed-out",
        status(Phase.ROLLING_OUT, "1", None, None, ago(601)),
        "1",
        view("1", available_replicas=0),
        StepKind.FAIL,
        "1",
        None,
    ),
    (
        "superseded",
        status(Phase.ROLLING_OUT, "2", "1", "1", ago(10)),
        "3",
        view("2", updated_replicas=1),
        StepKind.START,
        "3",
        "1",
    ),
    ("after-rollback", status(Phase.ROLLED_BACK, "1", "1"), "1", view("1"), StepKind.NOTHING, None, None),
    (
        "failed-stays-failed",
        status(Phase.FAILED, "2", "1", "1"),
        "2",
        view("2", available_replicas=0),
        StepKind.NOTHING,
        None,
        None,
    ),
    ("failed-recovers-late", status(Phase.FAILED, "2", "1", "1"), "2", view("2"), StepKind.READY, "2", "1"),
    (
        "failed-then-new-promotion",
        status(Phase.FAILED, "2", "1", "1"),
        "3",
        view("2", available_replicas=0),
        StepKind.START,
        "3",
        "1",
    ),
    ("no-alias-yet", status(), None, view(None), StepKind.NO_ALIAS, None, None),
    ("no-alias-reported", status(Phase.IDLE), None, view(None), StepKind.NOTHING, None, None),
    (
        "alias-deleted-keeps-serving",
        status(Phase.READY, "2", "2"),
        None,
        view("2"),
        StepKind.NOTHING,
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("current", "alias", "deployment", "kind", "version", "previous"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_next_step(current, alias, deployment, kind, version, previous):
    step = next_step(SPEC, current, alias, deployment, NOW)
    assert step.kind == kind, step.reason
    if version is not None:
        assert step.version == version
    if kind in (StepKind.START, StepKind.READY, StepKind.ROLLBACK):
        assert step.previous_version == previous


def test_failed_rollout_without_auto_rollback_stays_put():
    spec = ServedModelSpec(deployment="api", rollout_timeout_seconds=60, auto_rollback=False)
    current = status(Phase.ROLLING_OUT, "2", "1", "1", ago(61))
    step = next_step(spec, current, "2", view("2", available_replicas=1, updated_replicas=1), NOW)
    assert step.kind == StepKind.FAIL and "timed out after 60s" in step.reason


def test_repeated_alias_reads_after_a_promotion_do_not_start_again():
    """The alias read every poll during a rollout keeps saying 2: wait, never a second START."""
    current = status(Phase.ROLLING_OUT, "2", "1", "1", ago(5))
    steps = {next_step(SPEC, current, "2", view("2", updated_replicas=1), NOW).kind for _ in range(5)}
    assert steps == {StepKind.WAIT}


# --- spec, status, cadence -----------------------------------------------------------------------


def test_spec_defaults_match_the_crd():
    spec = ServedModelSpec.from_spec({"deployment": "rk-rakuten-mlops-api"})
    assert (spec.registered_model, spec.alias, spec.container) == ("rakuten_classifier", "production", "api")
    assert (spec.poll_seconds, spec.rollout_timeout_seconds, spec.auto_rollback) == (30, 600, True)
    assert ServedModelSpec.from_spec({"deployment": "d", "autoRollback": False}).auto_rollback is False
    with pytest.raises(ValueError, match="spec.deployment"):
        ServedModelSpec.from_spec({"alias": "production"})


def test_transition_keeps_condition_times_and_caps_history():
    raw: dict[str, Any] = {}
    first = transition(
        raw,
        Phase.ROLLING_OUT,
        now=NOW,
        reason="RolloutStarted",
        message="v2",
        desired="2",
        previous="1",
        rollout_started=True,
    )
    raw = first.patch["status"]
    assert raw["rolloutStartedAt"] == "2026-11-22T12:00:00Z"
    assert first.status.phase == Phase.ROLLING_OUT and first.status.previous_version == "1"
    later = NOW + dt.timedelta(minutes=1)
    for _ in range(HISTORY_LIMIT + 3):
        raw = {
            **raw,
            **transition(
                raw, Phase.READY, now=later, reason="RolloutComplete", message="ok", desired="2", served="2"
            ).patch["status"],
        }
    ready = {c["type"]: c for c in raw["conditions"]}
    assert ready["Ready"]["status"] == "True"
    assert ready["Ready"]["lastTransitionTime"] == "2026-11-22T12:01:00Z"
    assert ready["Progressing"]["status"] == "False"
    assert len(raw["history"]) == HISTORY_LIMIT
    assert raw["history"][-1]["phase"] == "Ready"


def test_rollouts_are_watched_faster_than_the_alias_poll():
    assert wait_seconds(SPEC, Phase.ROLLING_OUT) == 2.0
    assert wait_seconds(SPEC, Phase.READY) == 30
    assert wait_seconds(ServedModelSpec(deployment="d", poll_seconds=1), Phase.ROLLING_OUT) == 1
