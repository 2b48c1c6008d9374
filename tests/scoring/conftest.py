"""Fixtures of the scoring tests: a real MLflow registry (SQLite store) with two versions, catalogues."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.scoring.factories import CATALOGUE_ROWS
from tests.serving.factories import fit_pipeline, register_version


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    name: str
    production: str  # version behind the production alias
    other: str  # a second version, not in production
    pipelines: dict  # version -> fitted pipeline

    def settings(self, home: Path):
        from rakuten_mlops.settings import Settings

        return Settings(home=home, mlflow_tracking_uri=self.tracking_uri, registered_model=self.name)

    def env(self, home: Path) -> dict[str, str]:
        return {
            "RAKUTEN_HOME": str(home),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "RAKUTEN_REGISTERED_MODEL": self.name,
        }


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Two versions fitted on the real sample rows; ``production`` names the first."""
    root = tmp_path_factory.mktemp("scoring-mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    name = f"rakuten_classifier_{uuid.uuid4().hex[:8]}"
    first, second = fit_pipeline(0), fit_pipeline(1)
    v1 = register_version(uri, name, pipeline=first)
    v2 = register_version(uri, name, pipeline=second, alias=None)
    return Registry(uri, name, v1, v2, {v1: first, v2: second})


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated catalogue's X file in the official layout (no labels: that is what gets scored)."""
    from rakuten_mlops.data.generator import generate_frame, write_official_layout

    folder = tmp_path_factory.mktemp("catalogue")
    x_path, _ = write_official_layout(generate_frame(CATALOGUE_ROWS, seed=31), folder)
    return x_path
