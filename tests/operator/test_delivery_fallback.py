"""Readiness-only fallback of a ServedModel with a strategy, and the canary Deployment's manifest.

``ModelRollout.step`` runs its real code against a real MLflow server and kmock's emulated
Kubernetes API (no cluster runs on this machine); the Prometheus it is given does not listen.
"""

from __future__ import annotations

import pytest
import yaml

from rakuten_operator.delivery import TRACK_LABEL, canary_deployment, canary_replicas, traffic_share
from rakuten_operator.reconcile import ModelRollout
from rakuten_operator.rollout import ServedModelSpec, read_deployment
from tests.operator.emulated_api import DEPLOYMENTS, SERVEDMODELS
from tests.operator.operator_harness import DeploymentController, api_deployment, served_model
from tests.support import free_port


@pytest.mark.parametrize(
    "stable, percent, expected", [(2, 10, 1), (2, 50, 2), (9, 10, 1), (18, 10, 2), (3, 25, 1), (0, 50, 1)]
)
def test_canary_replicas_follow_the_step(stable, percent, expected):
    assert canary_replicas(stable, percent) == expected


def test_the_canary_is_the_stable_deployment_pinned_to_the_candidate():
    stable = api_deployment("api", "6", replicas=2)
    stable["metadata"].update(uid="u1", resourceVersion="77", generation=4)
    owner = {"apiVersion": "mlops.rakuten.io/v1alpha1", "kind": "ServedModel", "name": "sm", "uid": "u2"}
    canary = canary_deployment(stable, "api", "7", 1, owner)
    assert canary["metadata"]["name"] == "api-canary" and "resourceVersion" not in canary["metadata"]
    view = read_deployment(canary, "api")
    assert (view.pinned_version, view.annotated_version, view.replicas) == ("7", "7", 1)
    pod_labels = canary["spec"]["template"]["metadata"]["labels"]
    assert stable["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), "the Service selects it"
    assert canary["spec"]["selector"]["matchLabels"] == {"app": "api", TRACK_LABEL: "canary"}
    assert canary["metadata"]["ownerReferences"][0]["uid"] == "u2"
    containers = {c["name"] for c in canary["spec"]["template"]["spec"]["containers"]}
    assert containers == {"api", "log-shipper"}
    assert read_deployment(stable, "api").pinned_version == "6", "the stable Deployment is not changed"
    assert traffic_share(2, 1) == pytest.approx(1 / 3)


@pytest.fixture
def kube(api_server, tmp_path, monkeypatch):
    from rakuten_operator import cluster

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(api_server.kubeconfig()))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    cluster._api_client.cache_clear()
    yield api_server
    cluster._api_client.cache_clear()


@pytest.mark.parametrize(
    "strategy, prometheus, delivery",
    [
        ({"canary": {"steps": [20]}}, "dead", "readiness-only: Prometheus at http://127.0.0.1:"),
        (None, "dead", "readiness-only: no spec.strategy"),
        ({"canary": {"steps": [20]}}, None, "readiness-only: RAKUTEN_PROMETHEUS_URL is not set"),
    ],
)
def test_without_a_reachable_prometheus_the_rollout_is_readiness_only(
    kube, namespace, mlflow_server, registered_model, tmp_path, monkeypatch, strategy, prometheus, delivery
):
    from rakuten_operator.cluster import Cluster

    monkeypatch.delenv("RAKUTEN_PROMETHEUS_URL", raising=False)
    model = registered_model(2)
    client = mlflow_server.client()
    client.set_registered_model_alias(model, "production", "1")
    name = f"api-{free_port()}"
    kube.create(DEPLOYMENTS, namespace, api_deployment(name, "1"))
    DeploymentController(kube, namespace, name).rolled_out()
    extra = {"strategy": strategy} if strategy else {}
    body = served_model(f"sm-{name}", name, model, mlflow_server.uri, **extra)
    kube.create(SERVEDMODELS, namespace, body)
    spec = ServedModelSpec.from_spec(body["spec"])
    events: list[tuple[str, str, str]] = []
    url = f"http://127.0.0.1:{free_port()}" if prometheus else ""
    rollout = ModelRollout(f"sm-{name}", namespace, Cluster(namespace), lambda *e: events.append(e),
                           db_url=f"sqlite:///{tmp_path / 'x.db'}", prometheus_url=url)  # fmt: skip
    status = rollout.step(spec, {"phase": "Ready", "servedVersion": "1", "desiredVersion": "1"})
    assert status["phase"] == "Ready"

    client.set_registered_model_alias(model, "production", "2")
    status = rollout.step(spec, status)
    assert status["phase"] == "RollingOut" and status["desiredVersion"] == "2"
    assert status["delivery"].startswith(delivery)
    assert read_deployment(kube.get(DEPLOYMENTS, namespace, name), "api").pinned_version == "2"
    assert kube.get(DEPLOYMENTS, namespace, f"{name}-canary") is None
    stored = kube.get(SERVEDMODELS, namespace, f"sm-{name}")["status"]
    assert stored["delivery"] == status["delivery"]
    assert (
        ("Warning", "AnalysisUnavailable") in {e[:2] for e in events}
        or prometheus is None
        or strategy is None
    )
