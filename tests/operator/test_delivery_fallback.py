"""Readiness-only fallback of a ServedModel with a strategy, the shadow it starts or not on the
stable pods, and the canary Deployment's manifest.

``ModelRollout.step`` runs its real code against a real MLflow server and kmock's emulated
Kubernetes API (no cluster runs on this machine); the Prometheus it is given does not listen, or
is a real one. A stable pod is its real ModelStore and ShadowScorer, in this process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from rakuten_mlops.registry import SHADOW_TAG
from rakuten_operator.delivery import TRACK_LABEL, canary_deployment, canary_replicas, traffic_share
from rakuten_operator.reconcile import ModelRollout
from rakuten_operator.rollout import ServedModelSpec, read_deployment
from tests.operator.emulated_api import DEPLOYMENTS, SERVEDMODELS
from tests.operator.operator_harness import DeploymentController, api_deployment, served_model
from tests.support import StandInHttpServer, free_port
from tests.support.prometheus import start_prometheus


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


@dataclass
class Rollout:
    """A ServedModel on version 1 (Deployment rolled out, status Ready) and its ModelRollout."""

    model: str
    client: Any
    deployment: str
    body: dict
    rollout: ModelRollout
    events: list[tuple[str, str, str]]
    status: dict

    def step(self) -> dict:
        self.status = self.rollout.step(ServedModelSpec.from_spec(self.body["spec"]), self.status)
        return self.status


@pytest.fixture
def on_version_1(kube, namespace, mlflow_server, registered_model, tmp_path, monkeypatch):
    """Factory: a :class:`Rollout` for ``strategy``, the operator given ``prometheus_url``."""
    from rakuten_operator.cluster import Cluster

    monkeypatch.delenv("RAKUTEN_PROMETHEUS_URL", raising=False)

    def make(strategy: dict | None, prometheus_url: str) -> Rollout:
        model = registered_model(2)
        client = mlflow_server.client()
        client.set_registered_model_alias(model, "production", "1")
        name = f"api-{free_port()}"
        kube.create(DEPLOYMENTS, namespace, api_deployment(name, "1"))
        DeploymentController(kube, namespace, name).rolled_out()
        extra = {"strategy": strategy} if strategy else {}
        body = served_model(f"sm-{name}", name, model, mlflow_server.uri, **extra)
        kube.create(SERVEDMODELS, namespace, body)
        events: list[tuple[str, str, str]] = []
        rollout = ModelRollout(f"sm-{name}", namespace, Cluster(namespace), lambda *e: events.append(e),
                               db_url=f"sqlite:///{tmp_path / 'x.db'}", prometheus_url=prometheus_url)  # fmt: skip
        ready = Rollout(model, client, name, body, rollout, events, {"phase": "Ready", "servedVersion": "1"})
        assert ready.step()["phase"] == "Ready"
        return ready

    return make


@pytest.fixture
def stable_pod_shadow(settings, mlflow_server):
    """Factory: the shadow scorer of a stable pod pinned to version 1 with every request sampled,
    built as the API builds it (real ModelStore on the MLflow server, version 1 loaded); the test
    calls its ``refresh`` (the pod's poll) itself and no scoring thread runs."""
    from rakuten_mlops.serving.metrics import api_metrics
    from rakuten_mlops.serving.model_store import ModelStore
    from rakuten_mlops.serving.shadow import ShadowScorer

    scorers = []

    def make(model: str) -> ShadowScorer:
        pod = {"mlflow_tracking_uri": mlflow_server.uri, "registered_model": model, "model_version": "1",
               "shadow_sample_rate": 1.0}  # fmt: skip
        store = ModelStore(settings.model_copy(update=pod), reload_signal=None)
        store.load()
        scorer = ShadowScorer.for_store(store, api_metrics())
        scorer._stop.set()
        scorers.append(scorer)
        return scorer

    yield make
    for scorer in scorers:
        scorer._set_candidate(None)


@pytest.mark.parametrize(
    "strategy, prometheus, delivery",
    [
        ({"canary": {"steps": [20]}}, "dead", "readiness-only: Prometheus at http://127.0.0.1:"),
        (None, "dead", "readiness-only: no spec.strategy"),
        ({"canary": {"steps": [20]}}, None, "readiness-only: RAKUTEN_PROMETHEUS_URL is not set"),
        ({"canary": {"steps": [20]}}, "auth proxy", "readiness-only: Prometheus at http://127.0.0.1:"),
        ({"canary": {"steps": [20]}}, "not prometheus", "readiness-only: Prometheus at http://127.0.0.1:"),
    ],
)
def test_without_a_reachable_prometheus_the_rollout_is_readiness_only_and_nothing_shadows(
    kube, namespace, on_version_1, stable_pod_shadow, strategy, prometheus, delivery
):
    """``prometheus``: nothing listening, not set, or a server that is not Prometheus' API: a stand-in
    HTTP server answering as an auth proxy in front of it (401, JSON) or as another server at the
    configured address (200, an HTML page), which the operator must not take for an answer."""
    answers = {
        "auth proxy": (401, {"message": "Unauthorized"}),
        "not prometheus": (200, b"<html>Grafana</html>"),
    }
    server = StandInHttpServer(lambda request: answers[prometheus]).start() if prometheus in answers else None
    url = server.url if server else f"http://127.0.0.1:{free_port()}" if prometheus else ""
    try:
        _readiness_only(kube, namespace, on_version_1, stable_pod_shadow, strategy, url, delivery)
    finally:
        if server:
            server.stop()
    if server:
        assert server.requests, "the operator asked the server"


def _readiness_only(kube, namespace, on_version_1, stable_pod_shadow, strategy, url, delivery):
    sm = on_version_1(strategy, url)
    # a tag left by an earlier rollout that judged version 2 in shadow beside version 1
    sm.client.set_model_version_tag(sm.model, "2", SHADOW_TAG, "1")

    sm.client.set_registered_model_alias(sm.model, "production", "2")
    status = sm.step()
    assert status["phase"] == "RollingOut" and status["desiredVersion"] == "2"
    assert status["delivery"].startswith(delivery)
    assert read_deployment(kube.get(DEPLOYMENTS, namespace, sm.deployment), "api").pinned_version == "2"
    assert kube.get(DEPLOYMENTS, namespace, f"{sm.deployment}-canary") is None
    stored = kube.get(SERVEDMODELS, namespace, f"sm-{sm.deployment}")["status"]
    assert stored["delivery"] == status["delivery"]
    assert ("Warning", "AnalysisUnavailable") in {e[:2] for e in sm.events} or not url or strategy is None
    # No analysis to feed: the stable pods, which serve until they are replaced, do not shadow.
    assert sm.client.get_model_version(sm.model, "2").tags[SHADOW_TAG] == ""
    shadow = stable_pod_shadow(sm.model)
    shadow.refresh()
    assert shadow.candidate is None


@pytest.mark.slow
def test_the_stable_pods_shadow_only_while_the_operator_judges_the_candidate(
    kube, on_version_1, stable_pod_shadow, tmp_path
):
    """Prometheus answers: shadow, and the pods load the candidate; the strategy removed mid-rollout
    makes the next rollout readiness-only, and the pods drop it."""
    process, url = start_prometheus(tmp_path / "prometheus", f"127.0.0.1:{free_port()}")
    try:
        sm = on_version_1({"canary": {"steps": [20]}}, url)
        shadow = stable_pod_shadow(sm.model)
        sm.client.set_registered_model_alias(sm.model, "production", "2")
        shadow.refresh()
        assert shadow.candidate is None, "the alias moved, the operator has not judged version 2 yet"
        assert sm.step()["phase"] == "Shadow"
        assert sm.client.get_model_version(sm.model, "2").tags[SHADOW_TAG] == "1"
        shadow.refresh()
        assert shadow.candidate is not None and shadow.candidate.version == "2"

        del sm.body["spec"]["strategy"]
        cancelled = sm.step()
        assert cancelled["phase"] == "Ready" and cancelled["servedVersion"] == "1", cancelled
        status = sm.step()
        assert status["phase"] == "RollingOut" and status["delivery"] == "readiness-only: no spec.strategy"
        shadow.refresh()
        assert shadow.candidate is None
    finally:
        process.stop()


@pytest.mark.slow
def test_canary_steps_shortened_mid_step_go_on_from_the_new_last_step(
    kube, namespace, on_version_1, tmp_path
):
    """``canary.steps`` cut from two steps to one while the rollout is at the second (a ``helm
    upgrade`` that changes the strategy): the operator judges the step it is at as the new last
    one, instead of failing on every look. A real Prometheus with no pods to scrape: every window
    is insufficient, and ``onInsufficientData: promote`` moves the rollout on at each deadline."""
    process, url = start_prometheus(tmp_path / "prometheus", f"127.0.0.1:{free_port()}")
    try:
        strategy = {
            "shadow": {"minRequests": 10, "maxSeconds": 1},
            "canary": {"steps": [10, 50], "stepSeconds": 1, "minRequests": 10},
            "onInsufficientData": "promote",
        }
        sm = on_version_1(strategy, url)
        sm.client.set_registered_model_alias(sm.model, "production", "2")
        seen = [sm.step()["phase"]]
        for _ in range(40):
            if sm.status.get("stageIndex") == 1:
                break
            time.sleep(0.3)
            seen.append(sm.step()["phase"])
        assert sm.status["stageIndex"] == 1 and sm.status["phase"] == "Canary", (seen, sm.status)

        sm.body["spec"]["strategy"]["canary"]["steps"] = [25]
        time.sleep(1.1)
        status = sm.step()
        assert status["phase"] == "RollingOut" and status["desiredVersion"] == "2", status
        assert read_deployment(kube.get(DEPLOYMENTS, namespace, sm.deployment), "api").pinned_version == "2"
    finally:
        process.stop()
