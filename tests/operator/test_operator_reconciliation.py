"""The real operator process against an emulated Kubernetes API and a real MLflow server.

The Kubernetes API server is emulated (kmock's ``KubernetesEmulator`` on a loopback port)
because no cluster can run on this machine: no container runtime for nodes and no network.
Everything else is real: ``rakuten-mlops operator run`` as a subprocess (kopf, the
``kubernetes`` client over HTTP), an ``mlflow server`` with a sqlite registry, and a data DB
for ``model_events``. The test plays the Deployment controller by writing the Deployment's
``status``, which is how success and failure of a rollout are simulated.
"""

from __future__ import annotations

import time

import pytest

from tests.operator.emulated_api import DEPLOYMENTS, EVENTS, PEERINGS, SERVEDMODELS
from tests.operator.operator_harness import DeploymentController, api_deployment, model_events, served_model
from tests.support import wait_until

pytestmark = pytest.mark.slow

POLL = 2  # spec.pollSeconds of the test ServedModels
# Generous bound for waits that are not the measured requirement (2 shared cores, other suites running).
SETTLE = 60  # generous: only the alias -> patch bound is a measured promise


def pinned(api, namespace: str, name: str) -> tuple[str | None, str | None]:
    """(env RAKUTEN_MODEL_VERSION of container api, pod-template annotation) of a Deployment."""
    body = api.get(DEPLOYMENTS, namespace, name)
    container = next(c for c in body["spec"]["template"]["spec"]["containers"] if c["name"] == "api")
    env = {var["name"]: var.get("value") for var in container.get("env", [])}
    annotations = body["spec"]["template"]["metadata"].get("annotations", {})
    return env.get("RAKUTEN_MODEL_VERSION"), annotations.get("mlops.rakuten.io/model-version")


def status_of(api, namespace: str, name: str) -> dict:
    return (api.get(SERVEDMODELS, namespace, name) or {}).get("status") or {}


def wait_phase(api, namespace: str, name: str, phase: str, timeout: float) -> dict:
    return wait_until(
        lambda: (s := status_of(api, namespace, name)).get("phase") == phase and s,
        timeout,
        0.2,
        f"ServedModel {name} to reach phase {phase} (now {status_of(api, namespace, name)})",
    )


def template_versions(api, namespace: str, name: str) -> list[str | None]:
    """The pinned version of every stored revision of the pod template, collapsing repeats."""
    seen: list[str | None] = []
    for body in api.history(DEPLOYMENTS, namespace, name):
        version = (
            body["spec"]["template"]["metadata"].get("annotations", {}).get("mlops.rakuten.io/model-version")
        )
        if not seen or seen[-1] != version:
            seen.append(version)
    return seen


def spec_patches(api, namespace: str, name: str) -> int:
    """How many times the Deployment's spec changed (each change = one rollout in a real cluster)."""
    bodies = api.history(DEPLOYMENTS, namespace, name)
    return sum(1 for a, b in zip(bodies, bodies[1:], strict=False) if a["spec"] != b["spec"])


def events_for(api, namespace: str, name: str) -> list[dict]:
    return [e for e in api.list(EVENTS, namespace) if e.get("involvedObject", {}).get("name") == name]


@pytest.fixture
def served_on_version_1(api_server, namespace, mlflow_server, registered_model):
    """A factory: a model with versions 1 and 2, production on 1, a Deployment rolled out on 1 and
    a ServedModel for it; returns the model's name, an MLflow client and the Deployment's controller."""

    def make(deployment: str, served: str, rollout_timeout: int):
        model = registered_model(2)
        client = mlflow_server.client()
        client.set_registered_model_alias(model, "production", "1")
        api_server.create(DEPLOYMENTS, namespace, api_deployment(deployment, "1"))
        controller = DeploymentController(api_server, namespace, deployment)
        controller.rolled_out()
        body = served_model(served, deployment, model, mlflow_server.uri, pollSeconds=POLL,
                            rolloutTimeoutSeconds=rollout_timeout)  # fmt: skip
        api_server.create(SERVEDMODELS, namespace, body)
        return model, client, controller

    return make


def test_promotion_rolls_the_deployment_once_and_survives_a_restart(
    api_server, namespace, start_operator, served_on_version_1, operator_env
):
    """Alias production 1 -> 2: the Deployment is pinned to 2 within pollSeconds + 5 s, exactly once."""
    model, client, controller = served_on_version_1("api-a", "classifier-a", rollout_timeout=60)
    operator = start_operator()
    ready = wait_phase(api_server, namespace, "classifier-a", "Ready", 30)
    assert ready["servedVersion"] == "1"
    assert spec_patches(api_server, namespace, "api-a") == 0, "version 1 was already pinned: no patch"

    started = time.monotonic()
    client.set_registered_model_alias(model, "production", "2")
    wait_until(
        lambda: pinned(api_server, namespace, "api-a") == ("2", "2"),
        SETTLE,
        0.05,
        "the Deployment to be pinned to version 2",
    )
    elapsed = time.monotonic() - started
    print(f"\nalias change -> Deployment patch: {elapsed:.2f} s (pollSeconds={POLL})")
    assert elapsed <= POLL + 5

    rolling = wait_phase(api_server, namespace, "classifier-a", "RollingOut", SETTLE)
    assert rolling["desiredVersion"] == "2" and rolling["servedVersion"] == "1"
    body = api_server.get(DEPLOYMENTS, namespace, "api-a")
    containers = {c["name"]: c for c in body["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"api", "log-shipper"}, "the other container survives the patch"
    assert {"name": "RAKUTEN_MODEL_POLL_SECONDS", "value": "0"} in containers["api"]["env"]

    # Repeated alias events (the gate re-promoting, a webhook retry) and an operator restart
    # in the middle of the rollout: still one patch, and the rollout resumes from the status.
    client.set_registered_model_alias(model, "production", "2")
    client.set_registered_model_alias(model, "production", "2")
    time.sleep(POLL + 1)
    operator.stop()
    start_operator()
    client.set_registered_model_alias(model, "production", "2")
    time.sleep(POLL + 1)
    assert spec_patches(api_server, namespace, "api-a") == 1
    assert template_versions(api_server, namespace, "api-a") == ["1", "2"]
    assert status_of(api_server, namespace, "classifier-a")["phase"] == "RollingOut"

    controller.rolled_out()
    ready = wait_phase(api_server, namespace, "classifier-a", "Ready", SETTLE)
    assert ready["servedVersion"] == "2" and ready["desiredVersion"] == "2"
    assert [c["status"] for c in ready["conditions"] if c["type"] == "Ready"] == ["True"]
    assert [h["phase"] for h in ready["history"]][-2:] == ["RollingOut", "Ready"]
    reasons = [e["reason"] for e in events_for(api_server, namespace, "classifier-a")]
    assert "RolloutStarted" in reasons and "RolloutComplete" in reasons
    rows = model_events(operator_env["RAKUTEN_DATABASE_URL"], model)
    assert [(r["event_type"], r["version"]) for r in rows][-1] == ("rollout", "2")


def test_failed_rollout_is_rolled_back_in_deployment_and_registry(
    api_server, namespace, start_operator, served_on_version_1, operator_env
):
    """New pods never become ready: after rolloutTimeoutSeconds, version 1 is back everywhere."""
    model, client, controller = served_on_version_1("api-b", "classifier-b", rollout_timeout=6)
    start_operator()
    wait_phase(api_server, namespace, "classifier-b", "Ready", 30)

    client.set_registered_model_alias(model, "production", "2")
    wait_until(lambda: pinned(api_server, namespace, "api-b") == ("2", "2"), SETTLE, 0.1, "pin to 2")
    # The controller starts one new pod that never becomes ready; the old ones keep serving.
    controller.report(updated=1, available=2, total=3)

    rolled_back = wait_phase(api_server, namespace, "classifier-b", "RolledBack", 6 + SETTLE)
    assert rolled_back["servedVersion"] == "1" and rolled_back["desiredVersion"] == "1"
    assert "timed out" in rolled_back["message"]
    assert pinned(api_server, namespace, "api-b") == ("1", "1")
    assert client.get_model_version_by_alias(model, "production").version == "1"
    tags = client.get_model_version(model, "2").tags
    assert "timed out" in tags["rollout_failure_reason"]
    rows = model_events(operator_env["RAKUTEN_DATABASE_URL"], model)
    kinds = [(r["event_type"], r["version"], r["previous_version"]) for r in rows]
    assert ("rollout_failed", "2", "1") in kinds and ("rollback", "1", "2") in kinds
    assert all(r["actor"] == "operator" for r in rows)
    warnings = [e for e in events_for(api_server, namespace, "classifier-b") if e["type"] == "Warning"]
    assert any(e["reason"] == "RolledBack" for e in warnings)

    # The reverted alias is not rolled out again: the Deployment stays on version 1.
    time.sleep(POLL + 1)
    assert status_of(api_server, namespace, "classifier-b")["phase"] == "RolledBack"
    assert template_versions(api_server, namespace, "api-b") == ["1", "2", "1"]


def test_missing_deployment_and_unreachable_mlflow_are_reported(
    api_server, namespace, start_operator, mlflow_server, registered_model
):
    """No Deployment: fails permanently, then recovers once it exists; an MLflow outage is retried."""
    from tests.support import free_port

    model = registered_model(1)
    operator = start_operator()
    api_server.create(
        SERVEDMODELS,
        namespace,
        served_model(
            "classifier-missing",
            "no-such-api",
            model,
            mlflow_server.uri,
            pollSeconds=POLL,
        ),
    )
    warnings = wait_until(
        lambda: [
            e
            for e in events_for(api_server, namespace, "classifier-missing")
            if e["type"] == "Warning" and e["reason"] == "DeploymentNotFound"
        ],
        SETTLE,
        0.2,
        "a DeploymentNotFound event",
    )
    assert "no-such-api" in warnings[0]["message"]
    wait_until(
        lambda: "Handler 'check_target' failed permanently" in operator.output(),
        SETTLE,
        0.2,
        "kopf to report the PermanentError",
    )

    # The Deployment appears (not pinned yet) while the model has no alias: Idle, nothing patched.
    api_server.create(DEPLOYMENTS, namespace, api_deployment("no-such-api", None))
    idle = wait_phase(api_server, namespace, "classifier-missing", "Idle", SETTLE)
    assert "'production'" in idle["message"] and "not set" in idle["message"]
    assert spec_patches(api_server, namespace, "no-such-api") == 0
    # Promotion: the operator recovered by itself and pins the version.
    mlflow_server.client().set_registered_model_alias(model, "production", "1")
    wait_until(lambda: pinned(api_server, namespace, "no-such-api") == ("1", "1"), SETTLE, 0.1, "pin to 1")
    DeploymentController(api_server, namespace, "no-such-api").rolled_out()
    assert wait_phase(api_server, namespace, "classifier-missing", "Ready", SETTLE)["servedVersion"] == "1"

    api_server.create(DEPLOYMENTS, namespace, api_deployment("api-c", "1"))
    dead_mlflow = f"http://127.0.0.1:{free_port()}"
    api_server.create(
        SERVEDMODELS,
        namespace,
        served_model(
            "classifier-outage",
            "api-c",
            model,
            dead_mlflow,
            pollSeconds=POLL,
        ),
    )
    warnings = wait_until(
        lambda: [
            e
            for e in events_for(api_server, namespace, "classifier-outage")
            if e["reason"] == "RegistryUnavailable"
        ],
        SETTLE,
        0.3,
        "a RegistryUnavailable event",
    )
    assert dead_mlflow in warnings[0]["message"]
    wait_until(
        lambda: "Daemon 'follow_alias' failed temporarily" in operator.output(),
        SETTLE,
        0.2,
        "kopf to report the TemporaryError",
    )
    assert spec_patches(api_server, namespace, "api-c") == 0
    assert status_of(api_server, namespace, "classifier-outage").get("phase") is None


def test_one_active_instance_through_peering(api_server, namespace, start_operator):
    """kopf peering: a second instance with a higher priority pauses the first one."""
    import httpx

    first = start_operator()
    assert httpx.get(first.ready_url, timeout=2).status_code == 200
    peers = wait_until(
        lambda: (api_server.get(PEERINGS, namespace, "rakuten-mlops") or {}).get("status"),
        SETTLE,
        0.2,
        "the operator's keep-alive in the KopfPeering status",
    )
    assert [p["priority"] for p in peers.values() if isinstance(p, dict)] == [0]

    second = start_operator("--priority", "100")
    wait_until(
        lambda: "Pausing operations in favour of" in first.output(),
        SETTLE,
        0.3,
        "the priority-0 instance to pause",
    )
    assert "Pausing operations in favour of" not in second.output()
