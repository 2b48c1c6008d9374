"""Shared fixtures: the harness (tests.support.plugin: real servers, Postgres databases, the
stand-in HTTP server), data databases on SQLite and Postgres, and embedded-default settings."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.support.plugin"]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on a real Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Embedded-default settings under a temporary RAKUTEN_HOME."""
    from rakuten_mlops.settings import Settings, get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("RAKUTEN_HOME", str(home))
    for var in (
        "RAKUTEN_DATABASE_URL",
        "MLFLOW_TRACKING_URI",
        "RAKUTEN_MODEL_VERSION",
        "RAKUTEN_ADMIN_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()
