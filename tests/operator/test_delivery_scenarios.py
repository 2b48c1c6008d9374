"""Progressive delivery end to end: shadow, canary steps, then promotion or revert, judged live.

The Kubernetes API server is emulated (kmock's emulator, ``emulated_api.py``) because no cluster
can run on this machine. Everything else is real: the operator process (``rakuten-mlops operator
run``), an ``mlflow server``, ``rakuten-mlops serve`` processes standing in for the pods of the
Deployments the operator manages (``delivery_harness.Fleet`` maps each Deployment to a process,
reports it rolled out once ready, and spreads a steady request stream over them in proportion to
their replicas as a Service would), and a Prometheus scraping those processes every second.

The analysis runs at the chart's default thresholds (``chart_analysis``: ``maxP99LatencyRatio``
1.5, ``minAgreement`` 0.85 ...); the stages are shortened (minutes in the chart, seconds here).
Each scenario measures the time from the alias move to the verdict and the share of the requests
answered since the move that the candidate answered before it was stopped. With
``RAKUTEN_DELIVERY_TIMES=<dir>`` each scenario also writes every answer the client got (time,
version, latency) to ``<dir>/<namespace>.json``, the input of ``benchmarks/bench_latency_check.py``.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.operator.delivery_harness import (
    Fleet,
    PrometheusServer,
    api_env,
    chart_analysis,
    plain,
    register,
    stable_fit,
)
from tests.operator.delivery_models import log_candidate, slowed
from tests.operator.emulated_api import DEPLOYMENTS, EVENTS, PEERINGS, SERVEDMODELS
from tests.operator.operator_harness import api_deployment, served_model
from tests.serving.factories import register_logged
from tests.support import REPO, free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SAMPLE_RATE = 0.5
STRATEGY = {
    "shadow": {"sampleRate": SAMPLE_RATE, "minRequests": 40, "maxSeconds": 60},
    "canary": {"steps": [10, 50], "stepSeconds": 3, "minRequests": 60},
    "analysis": chart_analysis(),
    "onInsufficientData": "wait",
}
VERDICT_TIMEOUT = 150  # generous: two shared cores, other suites running
MEASURED: list[str] = []


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    server = PrometheusServer(tmp_path_factory.mktemp("delivery-prometheus"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator_env(operator_env, prometheus):
    """The operator's environment (conftest) with the Prometheus the analysis queries."""
    return {**operator_env, "RAKUTEN_PROMETHEUS_URL": prometheus.url}


@pytest.fixture
def namespace(api_server):
    """A namespace per scenario (one operator each), with its KopfPeering object."""
    ns = f"dl-{uuid.uuid4().hex[:6]}"
    docs = list(yaml.safe_load_all((REPO / "operator" / "peering.yaml").read_text()))
    peering = next(doc for doc in docs if doc["kind"] == "KopfPeering")
    peering["metadata"]["namespace"] = ns
    api_server.create(PEERINGS, ns, peering)
    return ns


@pytest.fixture(scope="module", autouse=True)
def report_measurements():
    yield
    print("\n" + "\n".join(MEASURED))


class Scenario:
    """One ServedModel over a stable Deployment (2 replicas) served by the fleet."""

    def __init__(self, api, namespace, mlflow_server, prometheus, models, kinds, tmp_path, **strategy):
        self.api, self.ns, self.mlflow = api, namespace, mlflow_server
        self.model, self.kinds = register(mlflow_server.uri, models, kinds), kinds
        self.deployment = "api"
        api.create(DEPLOYMENTS, namespace, api_deployment(self.deployment, "1", replicas=2))
        env = api_env(mlflow_server.uri, self.model, tmp_path / "home", SAMPLE_RATE)
        self.fleet = Fleet(api, namespace, self.deployment, prometheus, env, tmp_path).start()
        spec = served_model("classifier", self.deployment, self.model, mlflow_server.uri, pollSeconds=1,
                            rolloutTimeoutSeconds=120, strategy={**STRATEGY, **strategy})  # fmt: skip
        api.create(SERVEDMODELS, namespace, spec)
        self.moved_at = 0.0

    def status(self) -> dict:
        return (self.api.get(SERVEDMODELS, self.ns, "classifier") or {}).get("status") or {}

    def wait(self, what: str, check, timeout: float = VERDICT_TIMEOUT) -> dict:
        try:
            return wait_until(lambda: (s := self.status()) and check(s) and s, timeout, 0.2, what)
        except AssertionError as exc:  # say where the rollout is at the end, and why
            events = [(e["reason"], e["message"][:400]) for e in self.events()]
            raise AssertionError(f"{exc}\nstatus: {self.status()}\nevents: {events}") from None

    def promote(self, version: str) -> None:
        self.mlflow.client().set_registered_model_alias(self.model, "production", version)
        self.moved_at = time.monotonic()

    def alias(self) -> str:
        return self.mlflow.client().get_registered_model(self.model).aliases["production"]

    def events(self) -> list[dict]:
        return [
            e
            for e in self.api.list(EVENTS, self.ns)
            if e.get("involvedObject", {}).get("name") == "classifier"
        ]

    def phases(self) -> list[tuple[str, str]]:
        return [(h["phase"], h.get("reason", "")) for h in self.status().get("history", [])]

    def canary(self) -> dict | None:
        return self.api.get(DEPLOYMENTS, self.ns, f"{self.deployment}-canary")

    def measure(self, name: str, candidate: str) -> tuple[float, float]:
        """Seconds from the alias move to now, and the candidate's share of the answers since the move.

        Recorded with the verdict (stage, requests it was taken on, the latency check's quantile),
        the machine's load average, and the candidate's answers as the client saw them.
        """
        elapsed = time.monotonic() - self.moved_at
        answered = self.fleet.answered.since(self.moved_at)
        share = answered[candidate] / max(sum(answered.values()), 1)
        analysis = self.status().get("analysis") or {}
        latency = next((c for c in analysis.get("checks", []) if c["name"] == "p99_latency_ratio"), {})
        basis = (
            f"{latency.get('value')} (bucket floor {latency.get('floor')}) at q={latency['quantile']} of {latency['requests']:.0f} requests"
            if "quantile" in latency
            else "not measured"
        )
        load = "/".join(f"{x:.2f}" for x in os.getloadavg())
        MEASURED.append(
            f"{name}: {analysis.get('verdict')} at {analysis.get('stage')} on n={analysis.get('requests')}; "
            f"alias move -> verdict {elapsed:.1f} s; candidate answered {answered[candidate]} of "
            f"{sum(answered.values())} requests ({share:.1%}); latency ratio {basis}; load average {load}"
        )
        MEASURED.append(f"  analyses: {'; '.join(self.readings())}")
        MEASURED.append(
            f"  client-side latency since the move: {self.fleet.answered.latency_summary(self.moved_at)}"
        )
        return elapsed, share

    def readings(self) -> list[str]:
        """Stage, verdict, requests, agreement and latency ratio of each Analysis event, oldest first."""
        out = []
        for event in self.events():
            head = re.match(r"(\w+) at ([^:]+):.*?\(n=(\d+)", event["message"])
            if event["reason"] != "Analysis" or head is None:
                continue
            agreement = re.search(r"\bagreement ([0-9.e+-]+)", event["message"])
            latency = re.search(
                r"\bp99_latency_ratio ([0-9.e+-]+ as p[0-9.]+ of \d+ requests).*?(bucket floor [0-9.e+-]+)",
                event["message"],
            )
            out.append(
                f"{head[2]} {head[1]} n={head[3]} agreement={agreement[1] if agreement else 'n/a'}"
                + (f" latency={latency[1]}, {latency[2]}" if latency else "")
            )
        return out

    def close(self) -> None:
        self.fleet.stop()
        if dump := os.environ.get("RAKUTEN_DELIVERY_TIMES"):  # for benchmarks/bench_latency_check.py
            path = Path(dump) / f"{self.ns}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"kinds": self.kinds, "times": self.fleet.answered.times}))


@pytest.fixture
def scenario(api_server, namespace, mlflow_server, prometheus, delivery_models, tmp_path):
    made = []

    def make(kinds, **strategy) -> Scenario:
        made.append(
            Scenario(
                api_server, namespace, mlflow_server, prometheus, delivery_models, kinds, tmp_path, **strategy
            )
        )
        return made[-1]

    yield make
    for one in made:
        one.close()


def ready_on(version: str):
    return lambda s: s.get("phase") == "Ready" and s.get("servedVersion") == version


# long: three stages on stand-in pods take about a minute.
@pytest.mark.long
def test_a_good_candidate_goes_shadow_canary_10_50_and_is_promoted(scenario, start_operator):
    sc = scenario(["stable", "good"])
    start_operator()
    sc.wait("Ready on version 1", ready_on("1"))
    sc.promote("2")
    sc.wait("the shadow of version 2", lambda s: s.get("phase") == "Shadow")
    done = sc.wait("version 2 promoted", ready_on("2"))
    elapsed, _ = sc.measure("good candidate promoted", "2")

    steps = [h.get("reason") for h in done["history"]]
    assert steps[-5:] == ["ShadowStarted", "CanaryStep", "CanaryStep", "RolloutStarted", "RolloutComplete"]
    assert done["analysis"]["verdict"] == "promote" and done["analysis"]["stage"] == "canary 50%"
    assert sc.canary() is None, "the canary is removed after the promotion"
    stable = sc.api.get(DEPLOYMENTS, sc.ns, "api")
    assert stable["spec"]["template"]["metadata"]["annotations"]["mlops.rakuten.io/model-version"] == "2"
    assert sc.alias() == "2"
    analyses = [e for e in sc.events() if e["reason"] == "Analysis"]
    assert any("agreement 1" in e["message"] and "shadow_scored=" in e["message"] for e in analyses)
    assert sc.fleet.answered.by_version["2"] > 0 and sc.fleet.answered.errors == 0


def test_a_one_class_candidate_is_stopped_in_shadow(scenario, start_operator, operator_env):
    sc = scenario(["stable", "one_class"])
    start_operator()
    sc.wait("Ready on version 1", ready_on("1"))
    sc.promote("2")
    done = sc.wait("version 2 reverted", lambda s: s.get("phase") == "RolledBack")
    _, share = sc.measure("one-class candidate stopped in shadow", "2")

    assert done["servedVersion"] == "1" and done["analysis"]["stage"] == "shadow"
    assert done["analysis"]["verdict"] == "abort"
    failed = {c["name"] for c in done["analysis"]["checks"] if not c["ok"]}
    assert {"agreement", "predicted_class_shift"} <= failed
    assert share == 0, "in shadow the candidate answers nobody"
    assert sc.alias() == "1"
    tags = sc.mlflow.client().get_model_version(sc.model, "2").tags
    assert "agreement" in tags["rollout_failure_reason"]
    assert sc.canary() is None and all(p != "Canary" for p, _ in sc.phases())
    assert any(e["reason"] == "RolledBack" and e["type"] == "Warning" for e in sc.events())
    from tests.operator.operator_harness import model_events

    kinds = [
        (r["event_type"], r["version"]) for r in model_events(operator_env["RAKUTEN_DATABASE_URL"], sc.model)
    ]
    assert ("rollout_failed", "2") in kinds and ("rollback", "1") in kinds


@pytest.mark.long
def test_a_slow_candidate_is_stopped_at_the_canary_step(scenario, start_operator):
    sc = scenario(["stable", "slow"])
    start_operator()
    sc.wait("Ready on version 1", ready_on("1"))
    sc.promote("2")
    done = sc.wait("version 2 reverted", lambda s: s.get("phase") == "RolledBack")
    _, share = sc.measure("candidate 60 ms slower per call stopped at canary", "2")

    assert done["analysis"]["stage"].startswith("canary"), done["analysis"]
    checks = {c["name"]: c for c in done["analysis"]["checks"]}
    assert not checks["p99_latency_ratio"]["ok"] and checks["agreement"]["ok"]
    MEASURED.append(f"  slow candidate p99 ratio at the verdict: {checks['p99_latency_ratio']['value']:.2f}")
    assert 0 < share < 0.5
    assert sc.canary() is None and sc.alias() == "1"


@pytest.mark.long
def test_a_candidate_three_times_slower_is_stopped_at_the_canary_step(
    scenario, start_operator, mlflow_server, delivery_models
):
    """A candidate whose requests take three times as long as the stable version's, answers unchanged.

    The stable version is the fit run by scikit-learn as a whole (``plain``: not the compiled
    runner's shape, so the model's own work is most of a request). Once it has answered 300
    requests, the candidate is made: the same pipeline with a pause of twice the stable version's
    median latency as the client sees it, so three times its median then. On the answers of the
    rollout itself the ratio is lower, not higher (the stable pods also score the shadow samples
    meanwhile): the test checks it stays within 2 and 3.3, then that the latency check alone
    stopped the canary.
    """
    plain(mlflow_server.uri, delivery_models)
    sc = scenario(["plain"])
    start_operator()
    sc.wait("Ready on version 1", ready_on("1"))
    answered, ready_at = sc.fleet.answered, time.monotonic()
    wait_until(lambda: answered.count("1", ready_at) >= 300, 60, 0.2, "300 answers of version 1")
    pause = 2 * answered.median("1", ready_at)
    register_logged(
        mlflow_server.uri, sc.model, log_candidate(mlflow_server.uri, slowed(stable_fit(), pause)), alias=None
    )
    sc.promote("2")
    done = sc.wait("version 2 reverted", lambda s: s.get("phase") == "RolledBack")
    _, share = sc.measure("candidate three times slower stopped at canary", "2")
    ratio = answered.median("2", sc.moved_at) / answered.median("1", sc.moved_at)
    checks = {c["name"]: c for c in done["analysis"]["checks"]}
    MEASURED.append(
        f"  pause {1000 * pause:.2f} ms; the client's median latency, candidate over stable: {ratio:.2f}; "
        f"latency check at the verdict: {checks['p99_latency_ratio']['value']:.2f} (floor {checks['p99_latency_ratio'].get('floor')})"
    )

    assert 2.0 <= ratio <= 3.3, f"the candidate is {ratio:.2f} times as slow at the median, not 2 to 3"
    assert done["analysis"]["stage"].startswith("canary"), done["analysis"]
    assert not checks["p99_latency_ratio"]["ok"]
    assert all(c["ok"] for name, c in checks.items() if name != "p99_latency_ratio"), checks
    assert 0 < share < 0.5
    assert sc.canary() is None and sc.alias() == "1"


@pytest.mark.long
def test_a_promotion_mid_rollout_supersedes_the_rollout_in_flight(scenario, start_operator):
    sc = scenario(["stable", "good", "good"])
    start_operator()
    sc.wait("Ready on version 1", ready_on("1"))
    sc.promote("2")
    sc.wait("version 2 in canary", lambda s: s.get("phase") == "Canary" and s.get("candidateVersion") == "2")
    sc.promote("3")
    shadow3 = sc.wait("version 3 in shadow", lambda s: s.get("candidateVersion") == "3")
    assert shadow3["stableVersion"] == "1" and shadow3["phase"] == "Shadow"
    done = sc.wait("version 3 promoted", ready_on("3"))
    sc.measure("promotion mid-rollout (version 3 over 2)", "3")
    assert any(e["reason"] == "RolloutSuperseded" for e in sc.events())
    rolled_out = [h["version"] for h in done["history"] if h["reason"] == "RolloutStarted"]
    assert rolled_out[-1:] == ["3"] and "2" not in rolled_out, (
        "the superseded version never reached the stable pods"
    )
    assert sc.alias() == "3" and sc.canary() is None


@pytest.mark.long
def test_after_an_operator_restart_the_rollout_resumes_at_the_same_step(scenario, start_operator):
    sc = scenario(["stable", "good"], canary={"steps": [10, 50], "stepSeconds": 8, "minRequests": 60})
    operator = start_operator()
    sc.wait("Ready on version 1", ready_on("1"))
    sc.promote("2")
    at = sc.wait("version 2 in canary", lambda s: s.get("phase") == "Canary")
    canary_uid = sc.canary()["metadata"]["uid"]
    operator.stop()
    start_operator()
    done = sc.wait("version 2 promoted", ready_on("2"))
    sc.measure("operator restarted in canary, promoted", "2")
    reasons = [h["reason"] for h in done["history"]]
    assert reasons.count("ShadowStarted") == 1, "the restart did not start the rollout again"
    assert reasons.count("CanaryStep") == 2, f"one entry per step: the restart repeated none ({reasons})"
    assert at["stageIndex"] == 0 and at["step"] == "canary 10%"
    assert done["analysis"]["verdict"] == "promote"
    created = [
        e for e in sc.api.history(DEPLOYMENTS, sc.ns, "api-canary") if e["metadata"]["uid"] != canary_uid
    ]
    assert not created, "the canary was not created twice"


@pytest.mark.long
def test_with_prometheus_down_the_rollout_pauses_and_nothing_is_promoted(
    scenario, start_operator, prometheus
):
    sc = scenario(["stable", "good"])
    operator = start_operator()
    sc.wait("Ready on version 1", ready_on("1"))
    sc.promote("2")
    sc.wait("the shadow of version 2", lambda s: s.get("phase") == "Shadow")
    prometheus.stop()
    try:
        wait_until(
            lambda: "AnalysisPaused" in {e["reason"] for e in sc.events()}, 60, 0.3, "an AnalysisPaused event"
        )
        wait_until(lambda: "failed temporarily" in operator.output(), 30, 0.3, "kopf's TemporaryError")
        time.sleep(4)
        paused = sc.status()
        assert paused["phase"] in ("Shadow", "Canary") and "paused" in paused["message"]
        stable = sc.api.get(DEPLOYMENTS, sc.ns, "api")
        assert stable["spec"]["template"]["metadata"]["annotations"]["mlops.rakuten.io/model-version"] == "1"
    finally:
        prometheus.start()
    sc.wait("version 2 promoted once Prometheus is back", ready_on("2"))
    sc.measure("Prometheus down during shadow, promoted after it came back", "2")
