"""The parts of the progressive-delivery tests: registered candidates, a real Prometheus, real API
processes standing in for the pods of the Deployments the operator manages, and a client that
spreads traffic over them as a Service does.

No Kubernetes cluster runs on this machine, so the Deployments live in kmock's emulated API
(``emulated_api.py``) and :class:`Fleet` plays the kubelet, the Deployment controller and the
Service: for each Deployment (the stable one and ``<name>-canary``) it runs one real
``rakuten-mlops serve`` process with the Deployment's pinned version and environment, reports the
Deployment rolled out once that process is ready, and sends each request to a Deployment chosen
with probability proportional to its ``spec.replicas`` (what kube-proxy's random choice among the
ready endpoints of one Service amounts to). Prometheus scrapes every process through a file_sd
target list that carries the ``namespace`` label a ServiceMonitor would set.
"""

from __future__ import annotations

import functools
import json
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.operator.delivery_models import log_candidate, one_class, slowed
from tests.operator.emulated_api import DEPLOYMENTS, EmulatedApiServer
from tests.serving.factories import (
    REALISTIC_PRODUCTS,
    ApiProcess,
    fit_pipeline,
    register_logged,
    sample_frame,
)
from tests.support import REPO, ManagedProcess
from tests.support.prometheus import prometheus_binary

#: Extra seconds per call of the slow candidate (the stable version answers in a few milliseconds).
SLOW_SECONDS = 0.06

SCRAPE_CONFIG = """\
global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: rakuten-api
    file_sd_configs: [{{files: ['{targets}'], refresh_interval: 1s}}]
"""


def chart_analysis() -> dict[str, Any]:
    """The analysis thresholds the chart gives a ServedModel by default
    (``operator.servedModel.strategy.analysis`` in values.yaml)."""
    values = yaml.safe_load((REPO / "charts" / "rakuten-mlops" / "values.yaml").read_text())
    return dict(values["operator"]["servedModel"]["strategy"]["analysis"])


# --- models -----------------------------------------------------------------------------------


@functools.cache
def stable_fit():
    """The pipeline every delivery candidate is made from, fitted once per session."""
    return fit_pipeline(0)


def log_delivery_models(tracking_uri: str, slow_seconds: float) -> dict[str, Any]:
    """The stable fit and its candidates, each logged once (ModelInfo by kind)."""
    stable = stable_fit()
    code = int(sample_frame()["prdtypecode"].value_counts().index[-1])  # a rare class: little agreement
    logged = log_candidate(tracking_uri, stable)
    return {
        "stable": logged,
        "good": logged,  # same data, same fit: a retrain that changes nothing
        "one_class": log_candidate(tracking_uri, one_class(stable, code)),
        "slow": log_candidate(tracking_uri, slowed(stable, slow_seconds)),
    }


def plain(tracking_uri: str, logged: dict[str, Any]) -> dict[str, Any]:
    """``logged`` with ``plain``: the stable fit run by scikit-learn as a whole (a Pause of 0 s is
    not the compiled runner's shape), logged on first use (only the 3x scenario needs it)."""
    if "plain" not in logged:
        logged["plain"] = log_candidate(tracking_uri, slowed(stable_fit(), 0.0))
    return logged


def register(tracking_uri: str, logged: dict[str, Any], kinds: list[str]) -> str:
    """A fresh registered model whose versions 1..n are ``kinds``; production -> version 1."""
    name = f"rakuten_classifier_{uuid.uuid4().hex[:6]}"
    for i, kind in enumerate(kinds):
        register_logged(tracking_uri, name, logged[kind], alias="production" if i == 0 else None)
    return name


# --- Prometheus -------------------------------------------------------------------------------


class PrometheusServer:
    """Debian's prometheus on a fixed loopback port (so it can be stopped and started again),
    scraping the targets of a file_sd list every second."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.url = f"http://127.0.0.1:{port}"
        self.targets = root / "targets.json"
        self.process: ManagedProcess | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.set_targets([])
        (root / "prometheus.yml").write_text(SCRAPE_CONFIG.format(targets=self.targets))

    def set_targets(self, groups: list[dict[str, Any]]) -> None:
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets)  # file_sd must never read half a file

    def start(self) -> PrometheusServer:
        cmd = [
            prometheus_binary(), f"--config.file={self.root / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.root / 'tsdb'}", f"--web.listen-address={self.url.removeprefix('http://')}",
        ]  # fmt: skip
        self.process = ManagedProcess(
            "prometheus", cmd, self.root / "prometheus.log", ready_url=f"{self.url}/-/ready"
        )
        self.process.start(60)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


# --- pods and Service -------------------------------------------------------------------------


@dataclass
class Pod:
    deployment: str
    version: str
    process: ApiProcess


@dataclass
class Answered:
    """What the Service answered: counts by version, and the time, version and latency (seen by
    the client) of every answer."""

    by_version: Counter = field(default_factory=Counter)
    errors: int = 0
    times: list[tuple[float, str, float]] = field(default_factory=list)

    def since(self, moment: float) -> Counter:
        return Counter(version for at, version, _ in self.times if at >= moment)

    def median(self, version: str, since: float = 0.0) -> float | None:
        """The median latency (s) of ``version``'s answers since ``since``; None before any."""
        seconds = [s for at, v, s in list(self.times) if at >= since and v == version]
        return statistics.median(seconds) if seconds else None

    def count(self, version: str, since: float = 0.0) -> int:
        return sum(1 for at, v, _ in list(self.times) if at >= since and v == version)

    def latency_summary(self, moment: float) -> str:
        """Per version since ``moment``: answers, median and slowest (ms), answers over 20 ms, and
        the first three answers (a freshly started pod's first requests)."""
        out = []
        for version in sorted({v for at, v, _ in self.times if at >= moment}):
            seconds = [s for at, v, s in self.times if at >= moment and v == version]
            ranked = sorted(seconds)
            first = ", ".join(f"{1000 * s:.1f}" for s in seconds[:3])
            out.append(
                f"version {version}: n={len(seconds)} median {1000 * ranked[len(ranked) // 2]:.1f} ms, "
                f"max {1000 * ranked[-1]:.1f} ms, {sum(s > 0.02 for s in seconds)} over 20 ms, first {first}"
            )
        return "; ".join(out)


class Fleet:
    """Kubelet + Deployment controller + Service for one namespace's API Deployments (see module doc)."""

    def __init__(
        self,
        api: EmulatedApiServer,
        namespace: str,
        stable: str,
        prometheus: PrometheusServer,
        env: dict[str, str],
        logs: Path,
    ) -> None:
        self.api, self.namespace, self.prometheus = api, namespace, prometheus
        self.deployments = (stable, f"{stable}-canary")
        self.env, self.logs = env, logs
        self.pods: dict[str, Pod] = {}
        self.weights: dict[str, int] = {}
        self.answered = Answered()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started: list[ApiProcess] = []

    # -- the controller's part -------------------------------------------------------------
    def sync(self) -> None:
        """Bring the processes in line with the Deployments, then report them rolled out."""
        for name in self.deployments:
            body = self.api.get(DEPLOYMENTS, self.namespace, name)
            pod = self.pods.get(name)
            if body is None:
                if pod is not None:
                    self._remove(name)
                continue
            version = pinned_version(body)
            if pod is None or pod.version != version:
                self._replace(name, body, version)
            replicas = int(body["spec"].get("replicas", 1))
            with self._lock:
                self.weights[name] = replicas
            status = body.get("status") or {}
            if (
                status.get("observedGeneration") != body["metadata"]["generation"]
                or status.get("availableReplicas") != replicas
            ):
                state = {"observedGeneration": body["metadata"]["generation"], "replicas": replicas,
                         "updatedReplicas": replicas, "availableReplicas": replicas, "readyReplicas": replicas}  # fmt: skip
                self.api.patch(DEPLOYMENTS, self.namespace, name, {"status": state}, subresource="status")

    def _replace(self, name: str, body: dict[str, Any], version: str | None) -> None:
        """Run the Deployment's pod: a new process, or the one already serving that version.

        Pods of one version are interchangeable stand-ins, so a promoted stable Deployment takes
        over the canary's process instead of starting another (it keeps serving meanwhile).
        """
        process = next((p.process for p in self.pods.values() if p.version == version), None)
        if process is None:
            container = next(c for c in body["spec"]["template"]["spec"]["containers"] if c["name"] == "api")
            pinned = {var["name"]: var["value"] for var in container.get("env", []) if "value" in var}
            process = ApiProcess(
                {**self.env, **pinned}, self.logs / f"{name}-{version}-{len(self.started)}.log"
            )
            self.started.append(process)
            process.start(timeout=120)
        old = self.pods.get(name)
        with self._lock:
            self.pods[name] = Pod(name, version or "", process)
        self._publish()
        if old is not None:
            self._release(old.process)

    def _remove(self, name: str) -> None:
        with self._lock:
            pod = self.pods.pop(name)
            self.weights.pop(name, None)
        self._publish()
        self._release(pod.process)

    def _release(self, process: ApiProcess) -> None:
        if all(pod.process is not process for pod in self.pods.values()):
            process.terminate()

    def _publish(self) -> None:
        processes = {id(pod.process): pod for pod in self.pods.values()}
        groups = [
            {"targets": [f"127.0.0.1:{pod.process.port}"], "labels": {"namespace": self.namespace}}
            for pod in processes.values()
        ]
        self.prometheus.set_targets(groups)

    # -- the Service's part ----------------------------------------------------------------
    def pick(self, rng: random.Random) -> Pod | None:
        with self._lock:
            names = [name for name in self.pods if self.weights.get(name, 0) > 0]
            if not names:
                return None
            weights = [self.weights[name] for name in names]
            return self.pods[rng.choices(names, weights)[0]]

    def _traffic(self, rate: float) -> None:
        rng = random.Random(0)
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                pod = self.pick(rng)
                if pod is None:
                    time.sleep(0.05)
                    continue
                product = REALISTIC_PRODUCTS[rng.randrange(len(REALISTIC_PRODUCTS))]
                sent = time.monotonic()
                try:
                    rsp = client.post(f"{pod.process.url}/predict", json=product)
                except httpx.HTTPError:
                    self.answered.errors += 1
                    continue
                if rsp.status_code == 200:
                    version = rsp.json()["model_version"]
                    self.answered.by_version[version] += 1
                    now = time.monotonic()
                    self.answered.times.append((now, version, now - sent))
                else:
                    self.answered.errors += 1
                time.sleep(1 / rate)

    def _control(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:  # a scenario's assertion says what went wrong; keep playing
                print(f"fleet sync: {exc}")
            self._stop.wait(0.3)

    def start(self, rate: float = 150.0) -> Fleet:
        self.sync()
        for target, args in ((self._control, ()), (self._traffic, (rate,))):
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        for process in self.started:
            if process.running:
                process.terminate()


def pinned_version(deployment: dict[str, Any]) -> str | None:
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "api")
    env = {var["name"]: var.get("value") for var in container.get("env", [])}
    return env.get("RAKUTEN_MODEL_VERSION")


def api_env(tracking_uri: str, model: str, home: Path, sample_rate: float) -> dict[str, str]:
    """Environment of the stand-in pods (what the chart gives the API container)."""
    return {
        "RAKUTEN_HOME": str(home),
        "RAKUTEN_DATABASE_URL": f"sqlite:///{home / 'data.db'}",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "RAKUTEN_REGISTERED_MODEL": model,
        "RAKUTEN_MODEL_POLL_SECONDS": "0",
        "RAKUTEN_SHADOW_SAMPLE_RATE": str(sample_rate),
        "RAKUTEN_SHADOW_POLL_SECONDS": "0.5",
        "RAKUTEN_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(REPO),  # the slow candidate's Pause step is a class of the tests
    }
