"""Kopf handlers for ServedModel: thin wrappers over :mod:`rakuten_operator.reconcile`.

Run with ``rakuten-mlops operator run`` (or ``kopf run -m rakuten_operator.handlers``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from rakuten_mlops.errors import RegistryUnavailableError
from rakuten_operator import GROUP, KIND, PEERING_NAME, PLURAL, VERSION
from rakuten_operator.cluster import Cluster, ClusterUnavailable, DeploymentNotFound
from rakuten_operator.prometheus import PrometheusUnavailable
from rakuten_operator.reconcile import ModelRollout
from rakuten_operator.rollout import RolloutStatus, ServedModelSpec, wait_seconds

log = logging.getLogger("rakuten_operator")
STORAGE_PREFIX = "operator.mlops.rakuten.io"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Operator-wide settings: state in annotations, no cluster-wide scans, named peering."""
    # Handler progress and the last-handled spec go to annotations: the CRD's status schema
    # stays closed (no status.kopf) and survives restarts.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{STORAGE_PREFIX}/finalizer"
    # Namespaced operator: listing namespaces or CRDs would need a ClusterRole.
    settings.scanning.disabled = True
    settings.posting.reporting_component = "rakuten-mlops-operator"
    if settings.peering.name == "default":
        settings.peering.name = PEERING_NAME


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def check_target(spec: kopf.Spec, namespace: str, body: kopf.Body, **_: Any) -> None:
    """Refuse a ServedModel whose spec is invalid or whose Deployment does not exist.

    kopf does not turn log lines into Events by default, so failures are also posted
    explicitly: ``kubectl describe servedmodel`` shows why.
    """
    try:
        served = ServedModelSpec.from_spec(dict(spec))
    except ValueError as exc:
        kopf.warn(body, reason="InvalidSpec", message=str(exc))
        raise kopf.PermanentError(str(exc)) from exc
    try:
        Cluster(namespace).get_deployment(served.deployment)
    except DeploymentNotFound as exc:
        kopf.warn(body, reason="DeploymentNotFound", message=str(exc))
        raise kopf.PermanentError(str(exc)) from exc
    except ClusterUnavailable as exc:
        raise kopf.TemporaryError(str(exc), delay=10) from exc


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10)
async def follow_alias(
    name: str, namespace: str, body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Poll the alias every spec.pollSeconds and drive the rollout; one daemon per ServedModel.

    Async so that a sleeping daemon holds no thread; each step (blocking MLflow and Kubernetes
    calls) runs in a worker thread. Outages of MLflow or of the API server end this call with a
    TemporaryError: kopf logs it and calls the daemon again after the delay, which resumes
    from the status.
    """

    def notify(event_type: str, reason: str, message: str) -> None:
        kopf.event(body, type=event_type, reason=reason, message=message)

    meta = body.get("metadata") or {}
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": name, "uid": meta.get("uid")}
    rollout = ModelRollout(name, namespace, Cluster(namespace), notify, owner=owner)
    raw_status = dict(body.get("status") or {})
    missing_reported = False
    while not stopped:
        try:
            spec = ServedModelSpec.from_spec(dict(body.get("spec") or {}))
        except ValueError:  # check_target reported it (Event InvalidSpec); wait for a fixed spec
            await stopped.wait(10)
            continue
        try:
            raw_status = await asyncio.to_thread(rollout.step, spec, raw_status)
            missing_reported = False
        except DeploymentNotFound as exc:
            # check_target already failed permanently for this spec; keep polling so that the
            # ServedModel recovers by itself once the Deployment exists.
            if not missing_reported:
                notify("Warning", "DeploymentNotFound", str(exc))
                log.warning("%s/%s: %s", namespace, name, exc)
                missing_reported = True
        except RegistryUnavailableError as exc:
            notify("Warning", "RegistryUnavailable", f"{exc}; retrying in {spec.poll_seconds:g}s")
            raise kopf.TemporaryError(str(exc), delay=spec.poll_seconds) from exc
        except ClusterUnavailable as exc:
            notify("Warning", "APIUnavailable", f"{exc}; retrying")
            raise kopf.TemporaryError(str(exc), delay=min(spec.poll_seconds, 5.0)) from exc
        except PrometheusUnavailable as exc:
            # Mid-rollout: no verdict without the signals; the rollout stays at its step.
            notify("Warning", "AnalysisPaused", f"{exc}; the rollout waits at its step")
            raise kopf.TemporaryError(str(exc), delay=min(spec.poll_seconds, 5.0)) from exc
        await stopped.wait(wait_seconds(spec, RolloutStatus.from_status(raw_status).phase))
