"""Fixtures of the control-room tests: a real platform (loaded data, two registered versions,
drift reports, retrain decisions, live evaluations), real API processes (one serving production,
two playing a rollout's stable and canary pods), real Prometheus servers scraping them, and the
emulated Kubernetes API holding ServedModels."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.operator.emulated_api import SERVEDMODELS, EmulatedApiServer
from tests.support import ManagedProcess, free_port, wait_http, wait_until
from tests.support.prometheus import instant_query, start_prometheus
from tests.ui.apptest import ADMIN_TOKEN, DEAD_API, REPORT_MARKER

#: What points a process at a Kubernetes API: a pod's in-cluster variables, and the kubeconfig.
KUBERNETES_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG")


@dataclass(frozen=True)
class Platform:
    """A platform home built once: data loaded in 2 batches, v1 in production, v2 registered."""

    home: Path
    source: Path


def _settings_for(home: Path):
    from rakuten_mlops.settings import Settings

    # a low gate so that the small fixture model goes into production on its first training
    return Settings(home=home, database_url=None, mlflow_tracking_uri=None, min_f1=0.3, max_ece=0.2)


def _insert_monitoring_rows(settings, html_path: Path) -> None:
    """What the drift and decide jobs write: two drift reports, a retrain decision, live F1."""
    from rakuten_mlops.db import record_model_event, session_scope
    from rakuten_mlops.db.models import DriftReport, LiveEvaluation

    now = datetime.now(UTC)
    html_path.write_text(f"<html><body><h1>{REPORT_MARKER}</h1></body></html>", encoding="utf-8")
    with session_scope(settings.database_url) as session:
        for age, severity, score in ((2, "none", 0.04), (1, "high", 0.41)):
            session.add(
                DriftReport(
                    created_at=now - timedelta(days=age),
                    model_version="1",
                    window_start=now - timedelta(days=age + 7),
                    window_end=now - timedelta(days=age),
                    n_reference=1200,
                    n_current=640,
                    severity=severity,
                    drifted=severity != "none",
                    summary={
                        "severity": severity,
                        "tests": [
                            {
                                "feature": "text_length",
                                "test": "wasserstein",
                                "score": score,
                                "threshold": 0.1,
                                "drifted": score > 0.1,
                            },
                            {
                                "feature": "prdtypecode",
                                "test": "jensenshannon",
                                "score": score / 2,
                                "threshold": 0.1,
                                "drifted": score / 2 > 0.1,
                            },
                        ],
                    },  # fmt: skip
                    html_path=str(html_path) if age == 1 else None,
                )
            )
        for age, f1 in ((2, 0.81), (1, 0.64)):
            session.add(
                LiveEvaluation(
                    created_at=now - timedelta(days=age),
                    model_version="1",
                    batch_id=2,
                    n_rows=300,
                    f1_weighted=f1,
                    accuracy=f1 + 0.01,
                )  # fmt: skip
            )
    record_model_event(
        settings.database_url,
        "retrain_decision",
        settings.registered_model,
        version="1",
        decision="retrain",
        reason="live weighted F1 0.64 < RAKUTEN_RETRAIN_F1 0.70; drift severity high",
        details={"retrain": True, "reasons": ["live F1 below threshold", "high drift"]},
    )


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    """Real data, real trainings, real registry (once per session)."""
    from rakuten_mlops.data.generator import generate_to_dir
    from rakuten_mlops.data.loader import LoadPlan, load_next_batch
    from rakuten_mlops.db import engine_for
    from rakuten_mlops.training.train import run_training

    root = tmp_path_factory.mktemp("ui-platform")
    source, home = root / "source", root / "home"
    generate_to_dir(source, rows=3000, seed=11)
    settings = _settings_for(home)
    plan = LoadPlan(initial_fraction=0.6, batch_fraction=0.15)
    load_next_batch(settings, source, plan)
    first = run_training(settings, promote=True, actor="ui-tests")
    assert first.decision is not None and first.decision.promoted, first.describe()
    load_next_batch(settings, source, plan)
    run_training(settings, promote=False, actor="ui-tests")
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    _insert_monitoring_rows(settings, settings.reports_dir / "drift-latest.html")
    engine_for(settings.database_url).dispose()  # checkpoint the WAL before homes are copied
    return Platform(home=home, source=source)


@pytest.fixture(scope="session")
def empty_platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with both databases created and nothing in them (MLflow's schema takes seconds)."""
    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.registry import production_version

    home = tmp_path_factory.mktemp("ui-empty") / "home"
    settings = _settings_for(home)
    upgrade(settings.database_url)
    assert production_version(settings) is None
    engine_for(settings.database_url).dispose()
    return home


@pytest.fixture
def empty_env(settings, empty_platform: Path, monkeypatch: pytest.MonkeyPatch):
    """The control room on a platform with no data and no model; the API is down."""
    shutil.copytree(empty_platform, settings.home, dirs_exist_ok=True)
    monkeypatch.setenv("RAKUTEN_API_URL", DEAD_API)
    for var in KUBERNETES_ENV:
        monkeypatch.delenv(var, raising=False)
    return settings


def copy_home(platform: Platform, target: Path) -> Path:
    shutil.copytree(platform.home, target, dirs_exist_ok=True)
    report = target / "reports" / "drift-latest.html"
    from sqlalchemy import update

    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import DriftReport

    url = f"sqlite:///{target / 'data.db'}"
    with engine_for(url).begin() as conn:  # the copied report row points at the copied file
        conn.execute(
            update(DriftReport).where(DriftReport.html_path.is_not(None)).values(html_path=str(report))
        )
    return target


@pytest.fixture
def ui_env(settings, platform: Platform, monkeypatch: pytest.MonkeyPatch):
    """A private copy of the platform under the ``settings`` fixture's home; the API is down;
    the control room has the admin token (typed tokens are checked against it)."""
    from rakuten_mlops.settings import Settings, get_settings

    copy_home(platform, settings.home)
    monkeypatch.setenv("RAKUTEN_API_URL", DEAD_API)
    monkeypatch.setenv("RAKUTEN_ADMIN_TOKEN", ADMIN_TOKEN)
    for var in ("ARGO_SERVER", "RAKUTEN_PROMETHEUS_URL", "RAKUTEN_RETRAIN_MODE", *KUBERNETES_ENV):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


@dataclass
class ApiProcess:
    url: str
    home: Path
    process: ManagedProcess

    def wait_ready(self, timeout: float = 180) -> ApiProcess:
        wait_http(f"{self.url}/ready", timeout, process=self.process)
        return self


def serve(home: Path, log_name: str, **env: str) -> ApiProcess:
    """``rakuten-mlops serve`` started on a free port over ``home`` with ``env`` (RAKUTEN_* variables),
    and none of this process's own RAKUTEN_* or MLFLOW_* settings; :meth:`ApiProcess.wait_ready`
    waits for it (several start in parallel)."""
    url = f"http://127.0.0.1:{free_port()}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MLFLOW_", "KUBECONFIG"))}
    process = ManagedProcess(
        "rakuten-mlops serve",
        [
            sys.executable,
            "-m",
            "rakuten_mlops.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            url.rsplit(":", 1)[1],
        ],
        home / log_name,
        env={**clean, "RAKUTEN_HOME": str(home), **env},
        inherit_env=False,
    )
    return ApiProcess(url, home, process.start())


@pytest.fixture(scope="session")
def api(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """``rakuten-mlops serve`` on a free port over its own copy of the platform (v1 in production)."""
    home = copy_home(platform, tmp_path_factory.mktemp("ui-api") / "home")
    started = serve(home, "api.log", RAKUTEN_ADMIN_TOKEN=ADMIN_TOKEN, RAKUTEN_MODEL_POLL_SECONDS="2")
    try:
        yield started.wait_ready()
    finally:
        started.process.stop()


@pytest.fixture
def api_env(settings, api: ApiProcess, monkeypatch: pytest.MonkeyPatch):
    """The control room pointed at the running API and its database, without a token of its own."""
    from rakuten_mlops.settings import Settings, get_settings

    monkeypatch.setenv("RAKUTEN_HOME", str(api.home))
    monkeypatch.setenv("RAKUTEN_API_URL", api.url)
    monkeypatch.delenv("RAKUTEN_ADMIN_TOKEN", raising=False)
    for var in KUBERNETES_ENV:
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


# --- Prometheus -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus(api: ApiProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's ``prometheus`` on a free port, scraping the ``api`` fixture every second."""
    process, url = start_prometheus(tmp_path_factory.mktemp("ui-prometheus"), api.url.removeprefix("http://"))
    try:
        wait_until(lambda: instant_query(url, "rakuten_model_info"), 60, 0.3, "the first scrape of the API",
                   process=process)  # fmt: skip
        yield url
    finally:
        process.stop()


@pytest.fixture
def prometheus_env(api_env, prometheus: str, monkeypatch: pytest.MonkeyPatch):
    """``api_env`` with the Prometheus that scrapes the API."""
    from rakuten_mlops.settings import get_settings

    monkeypatch.setenv("RAKUTEN_PROMETHEUS_URL", prometheus)
    get_settings.cache_clear()
    return api_env


# --- a rollout in progress ----------------------------------------------------------------------


@dataclass
class RolloutFleet:
    """Version 1 serving with version 2 in shadow, a canary serving version 2, and a Prometheus
    scraping both with the labels a ServiceMonitor adds."""

    stable: ApiProcess
    canary: ApiProcess
    prometheus: str
    labels: dict[str, str]


@pytest.fixture(scope="session")
def rollout_fleet(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutFleet]:
    """Two real API processes over one copy of the platform whose alias moved to version 2, as the
    pods of a progressive rollout run them: the stable pods pin version 1 and score every request
    with version 2 too (shadow), the canary pods pin version 2. Prometheus scrapes both."""
    from rakuten_mlops.registry import SHADOW_TAG, connect

    root = tmp_path_factory.mktemp("ui-rollout")
    home = copy_home(platform, root / "home")
    settings = _settings_for(home)
    client = connect(settings)
    # what the operator does when it judges version 2 in shadow beside version 1
    client.set_model_version_tag(settings.registered_model, "2", SHADOW_TAG, "1")
    client.set_registered_model_alias(settings.registered_model, "production", "2")
    common = {"RAKUTEN_MODEL_POLL_SECONDS": "0", "RAKUTEN_SHADOW_POLL_SECONDS": "0.5"}
    labels = {"namespace": "rakuten", "service": "rakuten-mlops-api"}
    started: list[ManagedProcess] = []
    try:
        stable = serve(
            home, "stable.log", RAKUTEN_MODEL_VERSION="1", RAKUTEN_SHADOW_SAMPLE_RATE="1.0", **common
        )
        started.append(stable.process)
        canary = serve(home, "canary.log", RAKUTEN_MODEL_VERSION="2", **common)
        started.append(canary.process)
        targets = [p.url.removeprefix("http://") for p in (stable, canary)]
        process, url = start_prometheus(root / "prometheus", targets, labels=labels)
        started.append(process)
        stable.wait_ready(), canary.wait_ready()
        # every per-version series scraped once at 0 before any traffic, as under steady traffic:
        # rate() and increase() then count the first requests too
        series = [
            'rakuten_model_requests_total{model_version="1"}',
            'rakuten_model_requests_total{model_version="2"}',
            'rakuten_shadow_samples_total{model_version="2", result="scored"}',
        ]
        wait_until(lambda: all(instant_query(url, s) for s in series), 30, 0.3,
                   f"Prometheus to scrape {series} from both processes", process=stable.process)  # fmt: skip
        yield RolloutFleet(stable, canary, url, labels)
    finally:
        for process in reversed(started):
            process.stop()


# --- the Kubernetes API (emulated) ----------------------------------------------------------------


@pytest.fixture(scope="session")
def kubernetes_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatedApiServer, Path]]:
    """kmock's emulated Kubernetes API (no cluster runs here; tests/operator/emulated_api.py) and a
    kubeconfig pointing at it."""
    server = EmulatedApiServer(free_port()).start()
    kubeconfig = tmp_path_factory.mktemp("ui-kube") / "kubeconfig"
    kubeconfig.write_text(json.dumps(server.kubeconfig()))
    yield server, kubeconfig
    server.stop()


@pytest.fixture
def served_model(kubernetes_api, monkeypatch: pytest.MonkeyPatch):
    """Factory: a ServedModel ``rakuten-api`` with ``status`` in a namespace of this test's own,
    the namespace the control room reads (RAKUTEN_NAMESPACE) through the kubeconfig."""
    from rakuten_mlops.settings import get_settings

    server, kubeconfig = kubernetes_api
    namespace = f"ui-{uuid.uuid4().hex[:6]}"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # in a pod: not its own cluster
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("RAKUTEN_NAMESPACE", namespace)
    get_settings.cache_clear()

    def create(status: dict) -> dict:
        body = {
            "apiVersion": "mlops.rakuten.io/v1alpha1",
            "kind": "ServedModel",
            "metadata": {"name": "rakuten-api"},
            "spec": {"deployment": "rakuten-mlops-api", "registeredModel": "rakuten_classifier"},
        }
        server.create(SERVEDMODELS, namespace, body)
        return server.patch(SERVEDMODELS, namespace, "rakuten-api", {"status": status}, subresource="status")

    yield create
    get_settings.cache_clear()
