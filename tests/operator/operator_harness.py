"""Helpers of the operator tests: objects as the chart renders them, the Deployment controller's
part (the emulated API server has no controllers).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tests.operator.emulated_api import DEPLOYMENTS, EmulatedApiServer


def api_deployment(name: str, version: str | None, replicas: int = 2) -> dict[str, Any]:
    """A serving Deployment as the chart renders it (container ``api``), rolled out and ready."""
    env = [{"name": "RAKUTEN_MODEL_POLL_SECONDS", "value": "0"}]
    annotations = {}
    if version is not None:
        env.append({"name": "RAKUTEN_MODEL_VERSION", "value": version})
        annotations["mlops.rakuten.io/model-version"] = version
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "image": "rakuten-app:dev",
                            "args": ["serve"],
                            "env": env,
                            "ports": [{"containerPort": 8000}],
                        },
                        {"name": "log-shipper", "image": "busybox", "args": ["sleep", "infinity"]},
                    ]
                },
            },
        },
    }


def served_model(name: str, deployment: str, model: str, mlflow_uri: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlops.rakuten.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {
            "registeredModel": model,
            "alias": "production",
            "deployment": deployment,
            "mlflowTrackingUri": mlflow_uri,
            **spec,
        },
    }


class DeploymentController:
    """Plays the Deployment controller of a real cluster: writes status for the current generation."""

    def __init__(self, api: EmulatedApiServer, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = api, namespace, name

    def report(self, *, updated: int, available: int, total: int | None = None, **extra: Any) -> None:
        current = self.api.get(DEPLOYMENTS, self.namespace, self.name)
        replicas = current["spec"]["replicas"]
        status = {
            "observedGeneration": current["metadata"]["generation"],
            "replicas": total if total is not None else replicas,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "readyReplicas": available,
            "unavailableReplicas": max(replicas - available, 0),
            **extra,
        }
        self.api.patch(DEPLOYMENTS, self.namespace, self.name, {"status": status}, subresource="status")

    def rolled_out(self) -> None:
        replicas = self.api.get(DEPLOYMENTS, self.namespace, self.name)["spec"]["replicas"]
        self.report(updated=replicas, available=replicas)


def model_events(db_url: str, model: str) -> list[dict]:
    """The ``model_events`` rows of ``model``, oldest first."""
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select event_type, version, previous_version, reason, actor from model_events "
                "where model_name = :m order by id"
            ),
            {"m": model},
        )
        result = [dict(row._mapping) for row in rows]
    engine.dispose()
    return result
