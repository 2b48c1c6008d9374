"""One reconciliation step of a ServedModel: read, decide (:mod:`rollout`), act, record.

``ModelRollout.step`` is what the kopf daemon calls every poll. It owns no state of its own:
what it needs to resume after a restart is written to the ServedModel's status.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from typing import Any

from rakuten_mlops.registry import AliasChanged, ModelRegistry
from rakuten_mlops.settings import Settings
from rakuten_operator import FAILURE_TAG
from rakuten_operator.cluster import Cluster
from rakuten_operator.rollout import (
    Phase,
    RolloutStatus,
    ServedModelSpec,
    Step,
    StepKind,
    needs_pin,
    next_step,
    pin_patch,
    read_deployment,
    transition,
)

log = logging.getLogger("rakuten_operator")

#: notify(event_type, reason, message) posts a Kubernetes Event on the ServedModel.
Notify = Callable[[str, str, str], None]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ModelRollout:
    """Drives one ServedModel: pins the alias's version in its Deployment, watches, rolls back."""

    def __init__(
        self,
        name: str,
        namespace: str,
        cluster: Cluster,
        notify: Notify,
        db_url: str | None = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.cluster = cluster
        self.notify = notify
        self.db_url = db_url if db_url is not None else os.environ.get("RAKUTEN_DATABASE_URL")

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def registry(self, spec: ServedModelSpec) -> ModelRegistry:
        """The registry adapter for the ServedModel's model and alias; alias moves lock and
        record in the data database (``RAKUTEN_DATABASE_URL``, else the embedded default)."""
        uri = spec.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise ValueError("no MLflow tracking URI: set spec.mlflowTrackingUri or MLFLOW_TRACKING_URI")
        update = {"mlflow_tracking_uri": uri, "registered_model": spec.registered_model}
        update["production_alias"] = spec.alias
        if self.db_url:
            update["database_url"] = self.db_url
        return ModelRegistry(Settings().model_copy(update=update))

    def step(self, spec: ServedModelSpec, raw_status: dict[str, Any]) -> dict[str, Any]:
        """Run one step and return the status as it now is (unchanged if nothing happened)."""
        registry = self.registry(spec)
        deployment = self.cluster.get_deployment(spec.deployment)
        view = read_deployment(deployment, spec.container)
        alias_version = registry.production_version()
        status = RolloutStatus.from_status(raw_status)
        step = next_step(spec, status, alias_version, view, utcnow())
        if step.kind in (StepKind.NOTHING, StepKind.WAIT):
            return raw_status
        log.info("%s: %s %s (%s)", self.ref, step.kind, step.version or "", step.reason)
        if step.kind == StepKind.START:
            return self._start(spec, raw_status, step, deployment)
        if step.kind == StepKind.READY:
            return self._ready(spec, raw_status, step)
        if step.kind == StepKind.ROLLBACK:
            return self._rollback(spec, raw_status, step, deployment, registry)
        if step.kind == StepKind.FAIL:
            return self._fail(spec, raw_status, step)
        return self._no_alias(raw_status, step)

    # --- steps --------------------------------------------------------------------------------

    def _pin(self, spec: ServedModelSpec, deployment: dict[str, Any], version: str) -> bool:
        """Pin ``version`` in the Deployment's pod template; False when it already was (no patch)."""
        if not needs_pin(read_deployment(deployment, spec.container), version):
            return False
        self.cluster.patch_deployment(spec.deployment, pin_patch(deployment, spec.container, version))
        log.info("%s: patched Deployment %s to model version %s", self.ref, spec.deployment, version)
        return True

    def _write(self, raw_status: dict[str, Any], phase: Phase, **kwargs: Any) -> dict[str, Any]:
        update = transition(raw_status, phase, now=utcnow(), **kwargs)
        self.cluster.patch_status(self.name, update.patch)
        return {**raw_status, **update.patch["status"]}

    def _start(self, spec, raw_status, step: Step, deployment) -> dict[str, Any]:
        patched = self._pin(spec, deployment, step.version)
        was = step.previous_version or "none"
        action = "pinned" if patched else "already pinned"
        message = (
            f"version {step.version} {action} in Deployment {spec.deployment} "
            f"(previous: {was}); {step.reason}"
        )
        new = self._write(
            raw_status,
            Phase.ROLLING_OUT,
            reason="RolloutStarted",
            message=message,
            desired=step.version,
            previous=step.previous_version or "",
            rollout_started=True,
        )
        self.notify("Normal", "RolloutStarted", message)
        return new

    def _ready(self, spec, raw_status, step: Step) -> dict[str, Any]:
        message = f"version {step.version} serves: {step.reason}"
        # Audit first, status last: a crash in between repeats the step rather than losing the row.
        self._record(
            "rollout", spec, version=step.version, previous_version=step.previous_version, reason=step.reason
        )
        new = self._write(
            raw_status,
            Phase.READY,
            reason="RolloutComplete",
            message=message,
            desired=step.version,
            served=step.version,
        )
        self.notify("Normal", "RolloutComplete", message)
        return new

    def _rollback(self, spec, raw_status, step: Step, deployment, registry: ModelRegistry) -> dict[str, Any]:
        """Pin the previous version back, then move the alias back if it still names the failed
        version: compare-and-set under the registry lock, its rows in the same transaction, so a
        promotion that landed meanwhile is never overwritten."""
        target, failed = step.version, step.previous_version
        self._pin(spec, deployment, target)
        registry.tag(failed, {FAILURE_TAG: step.reason[:500]})
        details = {"servedmodel": self.ref, "deployment": spec.deployment}
        failed_row = dict(
            version=failed, previous_version=target, reason=step.reason, actor="operator", details=details
        )
        try:
            registry.move_alias(
                target, failed, step.reason, "operator", details=details, also_record=(("rollout_failed", failed_row),)
            )  # fmt: skip
            log.info("%s: moved alias %s back to %s", self.ref, spec.alias, target)
        except AliasChanged as exc:
            log.info("%s: alias %s now points to %s, left as is", self.ref, spec.alias, exc.current)
            self._record("rollout_failed", spec, **{k: v for k, v in failed_row.items() if k != "actor"})
        message = f"version {failed} failed ({step.reason}); rolled back to version {target}"
        new = self._write(
            raw_status,
            Phase.ROLLED_BACK,
            reason="RolledBack",
            message=message,
            desired=target,
            served=target,
            previous="",
        )
        self.notify("Warning", "RolledBack", message)
        return new

    def _fail(self, spec, raw_status, step: Step) -> dict[str, Any]:
        message = f"version {step.version} did not roll out: {step.reason}"
        self._record(
            "rollout_failed",
            spec,
            version=step.version,
            previous_version=step.previous_version,
            reason=step.reason,
            details={"servedmodel": self.ref, "deployment": spec.deployment},
        )
        new = self._write(
            raw_status, Phase.FAILED, reason="RolloutFailed", message=message, desired=step.version
        )
        self.notify("Warning", "RolloutFailed", message)
        return new

    def _no_alias(self, raw_status, step: Step) -> dict[str, Any]:
        new = self._write(raw_status, Phase.IDLE, reason="AliasNotSet", message=step.reason)
        self.notify("Normal", "AliasNotSet", step.reason)
        return new

    # --- audit --------------------------------------------------------------------------------

    def _record(self, event_type: str, spec: ServedModelSpec, **fields: Any) -> None:
        """Append a model_events row; the rollout never fails because the audit DB is down."""
        if not self.db_url:
            log.info("%s: RAKUTEN_DATABASE_URL is not set: no model_events row for %s", self.ref, event_type)
            return
        from rakuten_mlops.db import record_model_event

        fields = {key: value for key, value in fields.items() if value is not None}
        try:
            record_model_event(self.db_url, event_type, spec.registered_model, actor="operator", **fields)
        except Exception as exc:
            log.warning("%s: could not record model event %s: %s", self.ref, event_type, exc)
