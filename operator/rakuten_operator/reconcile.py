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

from rakuten_mlops.registry import SHADOW_TAG, AliasChanged, ModelRegistry
from rakuten_mlops.settings import Settings
from rakuten_operator import FAILURE_TAG
from rakuten_operator.analysis import Strategy, Verdict, judge
from rakuten_operator.cluster import Cluster
from rakuten_operator.delivery import canary_deployment, canary_name, canary_replicas, traffic_share
from rakuten_operator.prometheus import Prometheus, PrometheusUnavailable
from rakuten_operator.rollout import (
    Phase,
    RolloutStatus,
    ServedModelSpec,
    Step,
    StepKind,
    format_time,
    needs_pin,
    next_step,
    parse_time,
    pin_patch,
    read_deployment,
    rollout_verdict,
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
        *,
        prometheus_url: str | None = None,
        owner: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.cluster = cluster
        self.notify = notify
        self.db_url = db_url if db_url is not None else os.environ.get("RAKUTEN_DATABASE_URL")
        url = prometheus_url if prometheus_url is not None else os.environ.get("RAKUTEN_PROMETHEUS_URL")
        self.prometheus = Prometheus(url) if url else None
        self.owner = owner  # the ServedModel (apiVersion, kind, name, uid): owner of the canary

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
        if status.phase in (Phase.SHADOW, Phase.CANARY):
            return self._progress(spec, raw_status, status, alias_version, deployment, registry)
        step = next_step(spec, status, alias_version, view, utcnow())
        if step.kind in (StepKind.NOTHING, StepKind.WAIT):
            return raw_status
        log.info("%s: %s %s (%s)", self.ref, step.kind, step.version or "", step.reason)
        if step.kind == StepKind.START:
            stable = status.served_version
            progressive = (
                spec.strategy is not None
                and status.phase != Phase.ROLLING_OUT
                and stable is not None
                and step.version != stable
                and view.pinned_version == stable
            )
            if progressive:
                fallback = self._analysis_unavailable()
                if fallback is None:
                    return self._start_shadow(spec, raw_status, registry, stable, step.version, step.reason)
                return self._start(
                    spec, raw_status, step, deployment, registry, f"readiness-only: {fallback}"
                )
            why = "readiness-only: no spec.strategy" if spec.strategy is None else "readiness-only"
            return self._start(spec, raw_status, step, deployment, registry, why)
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

    def _decide(self, raw_status, phase: Phase, reason: str, message: str, *, warn=False, **fields) -> dict:
        """Write a decision to the status (:func:`rollout.transition`), then post it as an Event
        (a Warning when ``warn``); returns the status as it now is."""
        update = transition(raw_status, phase, now=utcnow(), reason=reason, message=message, **fields)
        self.cluster.patch_status(self.name, update.patch)
        self.notify("Warning" if warn else "Normal", reason, message)
        return {**raw_status, **update.patch["status"]}

    def _start(
        self, spec, raw_status, step: Step, deployment, registry, delivery: str, extra: dict | None = None
    ):
        """Pin ``step.version`` in the Deployment; its shadow, if any, ends (nothing left to judge)."""
        self._end_shadow(registry, step.version)
        patched = self._pin(spec, deployment, step.version)
        was = step.previous_version or "none"
        action = "pinned" if patched else "already pinned"
        message = (
            f"version {step.version} {action} in Deployment {spec.deployment} "
            f"(previous: {was}); {step.reason}"
        )
        return self._decide(raw_status, Phase.ROLLING_OUT, "RolloutStarted", message, desired=step.version,
                            previous=step.previous_version or "", rollout_started=True,
                            extra={"delivery": delivery, **(extra or {})})  # fmt: skip

    def _ready(self, spec, raw_status, step: Step) -> dict[str, Any]:
        message = f"version {step.version} serves: {step.reason}"
        if self._remove_canary(spec):
            message += f"; canary {canary_name(spec.deployment)} removed"
        # Audit first, status last: a crash in between repeats the step rather than losing the row.
        self._record(
            "rollout", spec, version=step.version, previous_version=step.previous_version, reason=step.reason
        )
        return self._decide(
            raw_status, Phase.READY, "RolloutComplete", message, desired=step.version, served=step.version
        )

    def _rollback(
        self, spec, raw_status, step: Step, deployment, registry: ModelRegistry, extra: dict | None = None
    ) -> dict[str, Any]:
        """Pin the previous version back, then move the alias back if it still names the failed
        version: compare-and-set under the registry lock, its rows in the same transaction, so a
        promotion that landed meanwhile is never overwritten."""
        target, failed = step.version, step.previous_version
        self._pin(spec, deployment, target)
        self._remove_canary(spec)
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
        return self._decide(raw_status, Phase.ROLLED_BACK, "RolledBack", message, warn=True,
                            desired=target, served=target, previous="", extra=extra)  # fmt: skip

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
        return self._decide(
            raw_status, Phase.FAILED, "RolloutFailed", message, warn=True, desired=step.version
        )

    def _no_alias(self, raw_status, step: Step) -> dict[str, Any]:
        return self._decide(raw_status, Phase.IDLE, "AliasNotSet", step.reason)

    # --- progressive delivery -----------------------------------------------------------------

    def _analysis_unavailable(self) -> str | None:
        """Why the analysis cannot run now (no Prometheus configured or reachable), else None."""
        if self.prometheus is None:
            return "RAKUTEN_PROMETHEUS_URL is not set"
        try:
            self.prometheus.check()
        except PrometheusUnavailable as exc:
            self.notify("Warning", "AnalysisUnavailable", f"{exc}: readiness-only rollout")
            return str(exc)
        return None

    def _stage_fields(self, strategy: Strategy, stage: int, stable: str, candidate: str, now, **more) -> dict:
        return {
            "delivery": "progressive",
            "step": strategy.stage_name(stage),
            "stageIndex": stage,
            "stageStartedAt": format_time(now),
            "stableVersion": stable,
            "candidateVersion": candidate,
            **more,
        }

    def _start_shadow(self, spec, raw_status, registry, stable: str, candidate: str, reason: str) -> dict:
        """The alias moved: the stable pods shadow the candidate (its SHADOW_TAG names the stable
        version they serve); no Deployment changes yet."""
        strategy, now = spec.strategy, utcnow()
        registry.tag(candidate, {SHADOW_TAG: stable})
        message = (
            f"version {candidate} in shadow beside version {stable} ({reason}): the stable pods score "
            f"{strategy.sample_rate:.0%} of requests with it until {strategy.shadow_min_requests} samples"
        )
        fields = self._stage_fields(strategy, -1, stable, candidate, now, canaryReplicas=0, lastVerdict="")
        return self._decide(raw_status, Phase.SHADOW, "ShadowStarted", message, desired=candidate,
                            previous=stable, rollout_started=True, extra=fields)  # fmt: skip

    def _progress(self, spec, raw_status, status: RolloutStatus, alias_version, deployment, registry):
        """One look at a rollout in shadow or canary: follow the alias, keep the canary, analyse, decide."""
        strategy = spec.strategy
        stable, candidate = status.stable_version, status.candidate_version
        if strategy is None or stable is None or candidate is None:
            return self._cancel(
                spec, raw_status, stable or status.served_version, "spec.strategy was removed"
            )
        if alias_version != candidate:
            if alias_version is None or alias_version == stable:
                why = f"alias {spec.alias!r} is back on version {stable}"
                return self._cancel(spec, raw_status, stable, why)
            self._remove_canary(spec)
            self.notify(
                "Normal",
                "RolloutSuperseded",
                f"version {alias_version} promoted while {candidate} was judged",
            )
            return self._start_shadow(
                spec, raw_status, registry, stable, alias_version, f"supersedes version {candidate}"
            )
        now = utcnow()
        stage = status.stage_index
        if stage >= len(strategy.steps):  # canary.steps shortened mid-step: judged as the new last step
            log.info(
                "%s: canary.steps has %d step(s) now, at step %d", self.ref, len(strategy.steps), stage + 1
            )
            stage = len(strategy.steps) - 1
        started = parse_time(status.stage_started_at) or now
        elapsed = (now - started).total_seconds()
        if stage >= 0:
            ready = self._ensure_canary(spec, deployment, candidate, stage)
            if not ready and elapsed >= spec.rollout_timeout_seconds:
                why = f"canary {canary_name(spec.deployment)} not ready after {elapsed:.0f}s"
                return self._abort(spec, raw_status, status, deployment, registry, why, None)
        try:
            signals, results = self.prometheus.signals(
                self.namespace, stable, candidate, elapsed, canary=stage >= 0
            )
        except PrometheusUnavailable as exc:
            message = f"analysis paused at {strategy.stage_name(stage)}: {exc}; nothing is promoted meanwhile"
            self.cluster.patch_status(self.name, {"status": {"message": message}})
            raise
        analysis = judge(strategy, stage, signals, elapsed)
        summary = analysis.summary()
        record = {**analysis.as_status(), "time": format_time(now)}
        extra = {"analysis": record, "lastVerdict": summary[:200]}
        previous_verdict = (raw_status.get("analysis") or {}).get("verdict")
        if analysis.verdict != Verdict.INSUFFICIENT or previous_verdict != str(Verdict.INSUFFICIENT):
            self.notify("Normal" if analysis.verdict != Verdict.ABORT else "Warning", "Analysis",
                        f"{summary}; queries: {_results_text(results)}")  # fmt: skip
        if analysis.verdict == Verdict.ABORT:
            return self._abort(spec, raw_status, status, deployment, registry, summary, extra)
        if analysis.verdict == Verdict.PROMOTE:
            log.info("%s: %s", self.ref, summary)
            step = Step(StepKind.START, candidate, stable, f"passed shadow and canary: {summary}")
            return self._start(
                spec, raw_status, step, deployment, registry, "progressive", {**extra, "step": "promoting"}
            )
        if analysis.verdict == Verdict.CONTINUE:
            nxt = stage + 1
            replicas = self._ensure_canary(spec, deployment, candidate, nxt, report=False)
            share = traffic_share(read_deployment(deployment, spec.container).replicas, replicas)
            message = (
                f"version {candidate}: {strategy.stage_name(nxt)} ({replicas} canary pod(s), "
                f"{share:.0%} of the pods) after {summary}"
            )
            fields = self._stage_fields(strategy, nxt, stable, candidate, now, canaryReplicas=replicas)
            return self._decide(raw_status, Phase.CANARY, "CanaryStep", message, extra={**extra, **fields})
        self.cluster.patch_status(self.name, {"status": extra})
        return {**raw_status, **extra}

    def _ensure_canary(self, spec, deployment, candidate: str, stage: int, *, report: bool = True):
        """Create or scale the canary for ``stage``; returns readiness (``report``) or its replicas."""
        name = canary_name(spec.deployment)
        stable_replicas = read_deployment(deployment, spec.container).replicas
        replicas = canary_replicas(stable_replicas, spec.strategy.steps[stage])
        current = self.cluster.find_deployment(name)
        if current is None:
            body = canary_deployment(deployment, spec.container, candidate, replicas, self.owner)
            self.cluster.create_deployment(body)
            log.info("%s: created canary %s (%d replicas, version %s)", self.ref, name, replicas, candidate)
            return replicas if not report else False
        view = read_deployment(current, spec.container)
        if view.pinned_version != candidate:
            self.cluster.patch_deployment(name, pin_patch(current, spec.container, candidate))
        if view.replicas != replicas:
            self.cluster.patch_deployment(name, {"spec": {"replicas": replicas}})
        if not report:
            return replicas
        return rollout_verdict(view, candidate, None, utcnow(), None).state == "complete"

    def _end_shadow(self, registry: ModelRegistry, version: str) -> None:
        """Clear ``version``'s shadow tag if set, so no pinned pod scores it in shadow any more."""
        if registry.version(version).tags.get(SHADOW_TAG):
            registry.tag(version, {SHADOW_TAG: ""})
            log.info("%s: version %s is no longer in shadow", self.ref, version)

    def _remove_canary(self, spec) -> bool:
        name = canary_name(spec.deployment)
        removed = self.cluster.delete_deployment(name)
        if removed:
            log.info("%s: removed canary %s", self.ref, name)
        return removed

    def _abort(self, spec, raw_status, status: RolloutStatus, deployment, registry, why: str, extra):
        """Stop the candidate: canary removed, alias moved back (compare-and-set), version tagged."""
        step = Step(StepKind.ROLLBACK, status.stable_version, status.candidate_version, why)
        fields = {**(extra or {}), "step": "aborted", "candidateVersion": "", "canaryReplicas": 0}
        fields.setdefault("lastVerdict", why[:200])
        return self._rollback(spec, raw_status, step, deployment, registry, extra=fields)

    def _cancel(self, spec, raw_status, stable: str | None, why: str) -> dict[str, Any]:
        """The alias left the candidate for the stable version: stop judging, nothing else to undo."""
        self._remove_canary(spec)
        cleared = {"step": "", "candidateVersion": "", "canaryReplicas": 0}
        return self._decide(raw_status, Phase.READY, "RolloutCancelled", f"rollout cancelled: {why}",
                            desired=stable, served=stable, previous="", extra=cleared)  # fmt: skip

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


def _results_text(results: dict[str, Any]) -> str:
    """The query results of one analysis, short enough for an Event (the latency histograms are
    in the latency check's description: quantile, requests and both values)."""
    parts = []
    for name, value in results.items():
        if name.endswith("_latency"):
            continue
        if isinstance(value, dict):
            top = sorted(value.items(), key=lambda kv: -kv[1])[:3]
            parts.append(f"{name}=" + "{" + ", ".join(f"{k}: {v:.0f}" for k, v in top) + "}")
        elif value is not None:
            parts.append(f"{name}={value:.4g}")
    return ", ".join(parts)
