"""Plain decisions of a model rollout: no Kubernetes, no MLflow, no kopf.

The operator reads three things (the ServedModel's spec and status, the version behind the
alias in MLflow, the serving Deployment) and :func:`next_step` says what to do with them.
Everything here is a pure function of its arguments, so each rule is unit-tested directly.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rakuten_operator import VERSION_ANNOTATION, VERSION_ENV
from rakuten_operator.analysis import Strategy

HISTORY_LIMIT = 10
#: While a rollout is in flight the Deployment is checked at least this often (seconds).
ROLLOUT_CHECK_SECONDS = 2.0


class Phase(StrEnum):
    IDLE = "Idle"
    ROLLING_OUT = "RollingOut"
    SHADOW = "Shadow"  # progressive rollout: the stable pods score a sample with the candidate
    CANARY = "Canary"  # progressive rollout: a canary Deployment serves the candidate
    READY = "Ready"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


class StepKind(StrEnum):
    NOTHING = "nothing"  # all in place, or waiting for something that is not there yet
    START = "start"  # pin a new version in the Deployment and watch its rollout
    WAIT = "wait"  # rollout in flight, not done yet
    READY = "ready"  # rollout complete
    ROLLBACK = "rollback"  # rollout failed: put the previous version back (Deployment + alias)
    FAIL = "fail"  # rollout failed and there is nothing to roll back to (or autoRollback is off)
    NO_ALIAS = "no_alias"  # the alias is not set in the registry: nothing to serve yet


@dataclass(frozen=True)
class ServedModelSpec:
    """The ServedModel's spec with the CRD defaults applied (they also apply if the CRD had none)."""

    deployment: str
    registered_model: str = "rakuten_classifier"
    alias: str = "production"
    container: str = "api"
    mlflow_tracking_uri: str | None = None
    poll_seconds: float = 30.0
    rollout_timeout_seconds: float = 600.0
    auto_rollback: bool = True
    strategy: Strategy | None = None  # progressive delivery (None: readiness-only rollouts)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ServedModelSpec:
        if not spec.get("deployment"):
            raise ValueError("spec.deployment (the name of the serving Deployment) is required")
        return cls(
            deployment=str(spec["deployment"]),
            registered_model=str(spec.get("registeredModel") or cls.registered_model),
            alias=str(spec.get("alias") or cls.alias),
            container=str(spec.get("container") or cls.container),
            mlflow_tracking_uri=spec.get("mlflowTrackingUri") or None,
            poll_seconds=float(spec.get("pollSeconds") or cls.poll_seconds),
            rollout_timeout_seconds=float(spec.get("rolloutTimeoutSeconds") or cls.rollout_timeout_seconds),
            auto_rollback=bool(spec.get("autoRollback", cls.auto_rollback)),
            strategy=Strategy.from_spec(spec.get("strategy")),
        )


@dataclass(frozen=True)
class DeploymentView:
    """What the rollout decisions need from a Deployment object."""

    name: str
    generation: int
    observed_generation: int
    replicas: int
    updated_replicas: int
    available_replicas: int
    total_replicas: int
    pinned_version: str | None  # env RAKUTEN_MODEL_VERSION of the serving container
    annotated_version: str | None  # pod-template annotation mlops.rakuten.io/model-version
    deadline_exceeded: str | None  # message of a Progressing=False/ProgressDeadlineExceeded condition


@dataclass(frozen=True)
class RolloutStatus:
    """The operator's memory, kept in the ServedModel's status so that restarts resume."""

    phase: Phase | None = None
    desired_version: str | None = None
    served_version: str | None = None
    previous_version: str | None = None
    rollout_started_at: str | None = None
    message: str = ""
    stage_index: int = -1  # progressive rollout: -1 shadow, i canary step i
    stage_started_at: str | None = None
    stable_version: str | None = None
    candidate_version: str | None = None

    @classmethod
    def from_status(cls, status: dict[str, Any] | None) -> RolloutStatus:
        status = status or {}
        phase = status.get("phase")
        return cls(
            phase=Phase(phase) if phase in Phase._value2member_map_ else None,
            desired_version=status.get("desiredVersion"),
            served_version=status.get("servedVersion"),
            previous_version=status.get("previousVersion"),
            rollout_started_at=status.get("rolloutStartedAt"),
            message=status.get("message") or "",
            stage_index=int(status.get("stageIndex", -1)),
            stage_started_at=status.get("stageStartedAt"),
            stable_version=status.get("stableVersion") or None,
            candidate_version=status.get("candidateVersion") or None,
        )


@dataclass(frozen=True)
class Step:
    kind: StepKind
    version: str | None = None  # the version to pin (START/ROLLBACK) or that is done (READY/FAIL)
    previous_version: str | None = None  # what to roll back to if this one fails
    reason: str = ""


@dataclass(frozen=True)
class RolloutVerdict:
    state: str  # "progressing" | "complete" | "failed"
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.state != "progressing"


# --- reading objects ------------------------------------------------------------------------


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any] | None:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    for container in containers:
        if container.get("name") == name:
            return container
    return containers[0] if len(containers) == 1 else None


def _env_value(container: dict[str, Any] | None, name: str) -> str | None:
    for var in (container or {}).get("env") or []:
        if var.get("name") == name:
            return var.get("value")
    return None


def read_deployment(deployment: dict[str, Any], container: str = "api") -> DeploymentView:
    """Summarise a Deployment body (as the API returns it) for the rollout decisions."""
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status") or {}
    annotations = spec.get("template", {}).get("metadata", {}).get("annotations") or {}
    deadline = None
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "Progressing"
            and cond.get("status") == "False"
            and cond.get("reason") == "ProgressDeadlineExceeded"
        ):
            deadline = cond.get("message") or "progress deadline exceeded"
    return DeploymentView(
        name=meta.get("name", ""),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int(spec.get("replicas", 1)),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        total_replicas=int(status.get("replicas") or 0),
        pinned_version=_env_value(_container(deployment, container), VERSION_ENV),
        annotated_version=annotations.get(VERSION_ANNOTATION),
        deadline_exceeded=deadline,
    )


# --- decisions --------------------------------------------------------------------------------


def needs_pin(deployment: DeploymentView, version: str) -> bool:
    """True when the pod template does not pin ``version`` yet (env and annotation both count)."""
    return deployment.pinned_version != version or deployment.annotated_version != version


def pin_patch(deployment: dict[str, Any], container: str, version: str) -> dict[str, Any]:
    """JSON merge patch that pins ``version`` in the pod template (env + annotation).

    A merge patch replaces lists whole, so the patch carries the complete ``containers`` list
    with only the one env var changed, and the ``resourceVersion`` it was computed from: the
    API server refuses it (409) if the Deployment changed in between, instead of losing a change.
    """
    template = deployment.get("spec", {}).get("template", {})
    containers = copy.deepcopy(template.get("spec", {}).get("containers") or [])
    target = _container({"spec": {"template": {"spec": {"containers": containers}}}}, container)
    if target is None:
        names = ", ".join(c.get("name", "?") for c in containers) or "none"
        raise LookupError(f"container {container!r} not found in Deployment (containers: {names})")
    env = [var for var in target.get("env") or [] if var.get("name") != VERSION_ENV]
    env.append({"name": VERSION_ENV, "value": version})
    target["env"] = env
    patch: dict[str, Any] = {
        "spec": {
            "template": {
                "metadata": {"annotations": {VERSION_ANNOTATION: version}},
                "spec": {"containers": containers},
            }
        }
    }
    resource_version = deployment.get("metadata", {}).get("resourceVersion")
    if resource_version and resource_version.isdigit():
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def rollout_verdict(
    deployment: DeploymentView,
    version: str,
    started_at: dt.datetime | None,
    now: dt.datetime,
    timeout_seconds: float | None,
) -> RolloutVerdict:
    """Is the rollout of ``version`` complete, failed, or still progressing?

    Complete = the controller has seen the latest spec (``observedGeneration``), every desired
    replica is updated and available, and no old replica is left. Failed = the Deployment's own
    progress deadline passed, or ``timeout_seconds`` elapsed since ``started_at``.
    """
    if deployment.pinned_version != version:
        return RolloutVerdict("failed", f"the Deployment no longer pins version {version}")
    observed = deployment.observed_generation >= deployment.generation
    if observed and deployment.deadline_exceeded:
        return RolloutVerdict("failed", f"progress deadline exceeded: {deployment.deadline_exceeded}")
    if (
        observed
        and deployment.updated_replicas >= deployment.replicas
        and deployment.available_replicas >= deployment.replicas
        and deployment.total_replicas <= deployment.updated_replicas
    ):
        return RolloutVerdict(
            "complete",
            f"{deployment.available_replicas}/{deployment.replicas} replicas available on version {version}",
        )
    if timeout_seconds is not None and started_at is not None:
        elapsed = (now - started_at).total_seconds()
        if elapsed >= timeout_seconds:
            return RolloutVerdict(
                "failed",
                f"timed out after {timeout_seconds:g}s: {deployment.updated_replicas}/{deployment.replicas} "
                f"updated, {deployment.available_replicas}/{deployment.replicas} available",
            )
    return RolloutVerdict("progressing")


def rollback_target(status: RolloutStatus, failed_version: str) -> str | None:
    """The version to put back after ``failed_version`` failed: the last one that served, if any."""
    target = status.previous_version
    return target if target and target != failed_version else None


def next_step(
    spec: ServedModelSpec,
    status: RolloutStatus,
    alias_version: str | None,
    deployment: DeploymentView,
    now: dt.datetime,
) -> Step:
    """Decide the next step of the rollout state machine (see docs/operator.md for the diagram)."""
    rolling = status.phase == Phase.ROLLING_OUT and status.desired_version is not None
    if rolling and alias_version is not None and alias_version != status.desired_version:
        # A newer promotion supersedes the rollout in flight; the fallback stays the last good one.
        return Step(StepKind.START, alias_version, status.previous_version, "alias moved during a rollout")
    if rolling:
        verdict = rollout_verdict(
            deployment,
            status.desired_version,
            parse_time(status.rollout_started_at),
            now,
            spec.rollout_timeout_seconds,
        )
        if verdict.state == "complete":
            return Step(StepKind.READY, status.desired_version, status.previous_version, verdict.reason)
        if verdict.state == "failed":
            target = rollback_target(status, status.desired_version)
            if spec.auto_rollback and target:
                return Step(StepKind.ROLLBACK, target, status.desired_version, verdict.reason)
            why = verdict.reason if target else f"{verdict.reason}; no previous version to roll back to"
            return Step(StepKind.FAIL, status.desired_version, status.previous_version, why)
        return Step(StepKind.WAIT, status.desired_version, status.previous_version)

    if alias_version is None:
        if status.served_version is None and status.phase != Phase.IDLE:
            why = f"alias {spec.alias!r} of {spec.registered_model!r} is not set"
            return Step(StepKind.NO_ALIAS, reason=why)
        return Step(StepKind.NOTHING)

    if status.phase == Phase.FAILED and status.desired_version == alias_version:
        # Stay failed until someone promotes another version, but notice a late recovery.
        verdict = rollout_verdict(deployment, alias_version, None, now, None)
        if verdict.state == "complete":
            return Step(StepKind.READY, alias_version, status.previous_version, verdict.reason)
        return Step(StepKind.NOTHING)

    if alias_version == status.served_version and not needs_pin(deployment, alias_version):
        return Step(StepKind.NOTHING)

    previous = status.served_version or deployment.pinned_version
    if previous == alias_version:
        previous = status.previous_version
    reason = (
        f"alias {spec.alias!r} points to version {alias_version}"
        if alias_version != status.served_version
        else f"Deployment drifted from version {alias_version}"
    )
    return Step(StepKind.START, alias_version, previous, reason)


def wait_seconds(spec: ServedModelSpec, phase: Phase | None) -> float:
    """How long to sleep before the next look: faster while a rollout is in flight."""
    if phase in (Phase.ROLLING_OUT, Phase.SHADOW, Phase.CANARY):
        return min(spec.poll_seconds, ROLLOUT_CHECK_SECONDS)
    return spec.poll_seconds


# --- status -----------------------------------------------------------------------------------


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class StatusUpdate:
    """A status transition: the merge patch for ``status`` and the new in-memory view."""

    patch: dict[str, Any]
    status: RolloutStatus = field(default_factory=RolloutStatus)


def _condition(ctype: str, true: bool, reason: str, message: str, now: str, old: list[dict]) -> dict:
    previous = next((c for c in old if c.get("type") == ctype), None)
    value = "True" if true else "False"
    changed = previous is None or previous.get("status") != value
    return {
        "type": ctype,
        "status": value,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),
    }


def transition(
    raw_status: dict[str, Any] | None,
    phase: Phase,
    *,
    now: dt.datetime,
    reason: str,
    message: str,
    desired: str | None = None,
    served: str | None = None,
    previous: str | None = None,
    rollout_started: bool = False,
    generation: int | None = None,
    extra: dict[str, Any] | None = None,
) -> StatusUpdate:
    """Build the status patch for a phase change: conditions, transition time, short history."""
    raw = raw_status or {}
    stamp = format_time(now)
    old_conditions = list(raw.get("conditions") or [])
    conditions = [
        _condition("Ready", phase == Phase.READY, reason, message, stamp, old_conditions),
        _condition(
            "Progressing",
            phase in (Phase.ROLLING_OUT, Phase.SHADOW, Phase.CANARY),
            reason,
            message,
            stamp,
            old_conditions,
        ),
    ]
    entry = {"time": stamp, "phase": str(phase), "version": desired or "", "reason": reason}
    if message:
        entry["message"] = message[:256]
    history = (list(raw.get("history") or []) + [entry])[-HISTORY_LIMIT:]
    same_phase = raw.get("phase") == str(phase)
    patch: dict[str, Any] = {
        "phase": str(phase),
        "message": message[:1024],
        "lastTransitionTime": raw.get("lastTransitionTime", stamp) if same_phase else stamp,
        "conditions": conditions,
        "history": history,
    }
    if desired is not None:
        patch["desiredVersion"] = desired
    if served is not None:
        patch["servedVersion"] = served
    if previous is not None:
        patch["previousVersion"] = previous
    if rollout_started:
        patch["rolloutStartedAt"] = stamp
    if generation is not None:
        patch["observedGeneration"] = generation
    if extra:
        patch.update(extra)
    merged = {**raw, **patch}
    return StatusUpdate(patch={"status": patch}, status=RolloutStatus.from_status(merged))
