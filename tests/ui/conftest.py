"""Fixtures of the control-room tests: a real platform (loaded data, two registered versions,
drift reports, retrain decisions, live evaluations), a real API process, and AppTest helpers."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import ManagedProcess, free_port
from tests.ui.apptest import ADMIN_TOKEN, DEAD_API, REPORT_MARKER


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
    for var in ("ARGO_SERVER", "RAKUTEN_PROMETHEUS_URL", "RAKUTEN_RETRAIN_MODE"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


@dataclass
class ApiProcess:
    url: str
    home: Path
    process: ManagedProcess


@pytest.fixture(scope="session")
def api(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """``rakuten-mlops serve`` on a free port over its own copy of the platform (v1 in production)."""
    home = copy_home(platform, tmp_path_factory.mktemp("ui-api") / "home")
    url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MLFLOW_"))}
    env.update(RAKUTEN_HOME=str(home), RAKUTEN_ADMIN_TOKEN=ADMIN_TOKEN, RAKUTEN_MODEL_POLL_SECONDS="2")
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
        home / "api.log",
        env=env,
        inherit_env=False,
        ready_url=f"{url}/ready",
    )
    try:
        yield ApiProcess(url, home, process.start(timeout=180))
    finally:
        process.stop()


@pytest.fixture
def api_env(settings, api: ApiProcess, monkeypatch: pytest.MonkeyPatch):
    """The control room pointed at the running API and its database, without a token of its own."""
    from rakuten_mlops.settings import Settings, get_settings

    monkeypatch.setenv("RAKUTEN_HOME", str(api.home))
    monkeypatch.setenv("RAKUTEN_API_URL", api.url)
    monkeypatch.delenv("RAKUTEN_ADMIN_TOKEN", raising=False)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()
