"""Fixtures of the monitoring tests: ONE trained and promoted model per session, on a real
Postgres data database and the session's MLflow server, reused by every test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.monitoring.factories import clear_monitoring_tables
from tests.support import MlflowServer, temporary_database

SOURCE_ROWS = 12_000
INITIAL_FRACTION = 0.6


@dataclass
class Platform:
    settings: object  # rakuten_mlops.settings.Settings
    source: Path
    version: str
    pipeline: object
    reference: pd.DataFrame

    def env(self) -> dict[str, str]:
        return {
            "RAKUTEN_HOME": str(self.settings.home),
            "RAKUTEN_DATABASE_URL": self.settings.database_url,
            "MLFLOW_TRACKING_URI": self.settings.mlflow_tracking_uri,
        }


@pytest.fixture(scope="session")
def monitoring_pg_url(pg_server: str) -> Iterator[str]:
    """A Postgres data database for the whole session (the trained model's lineage lives in it)."""
    with temporary_database(pg_server, "rk_monitoring") as url:
        yield url


@pytest.fixture(scope="session")
def platform(monitoring_pg_url: str, mlflow_server: MlflowServer, tmp_path_factory) -> Platform:
    """Generated catalogue -> first load (60 %) -> sgd trained and promoted; reference features."""
    from rakuten_mlops.data.generator import generate_frame, write_official_layout
    from rakuten_mlops.data.loader import LoadPlan, load_next_batch
    from rakuten_mlops.monitoring.reference import load_production_model, reference_frame
    from rakuten_mlops.settings import Settings
    from rakuten_mlops.training.train import run_training

    root = tmp_path_factory.mktemp("monitoring-platform")
    settings = Settings(
        home=root / "home", database_url=monitoring_pg_url, MLFLOW_TRACKING_URI=mlflow_server.uri
    )
    source = root / "source"
    write_official_layout(generate_frame(SOURCE_ROWS, seed=1), source)
    load_next_batch(settings, source, LoadPlan(initial_fraction=INITIAL_FRACTION))
    result = run_training(settings, model="sgd", promote=True, actor="tests")
    assert result.decision_label == "promoted", result.describe()
    model = load_production_model(settings)
    return Platform(settings, source, model.version, model.pipeline, reference_frame(settings, model))


@pytest.fixture
def fresh(platform: Platform) -> Platform:
    """The session platform with an empty prediction log, no drift reports and no live evaluations."""
    clear_monitoring_tables(platform.settings.database_url)
    return platform


@pytest.fixture
def cli_env(platform: Platform, monkeypatch: pytest.MonkeyPatch):
    """Point ``rakuten-mlops`` (run in-process) at the session platform."""
    from rakuten_mlops.settings import get_settings

    for key, value in platform.env().items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield platform.env()
    get_settings.cache_clear()
