"""Shared fixtures: data databases on SQLite and on a real Postgres, settings, free ports."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE_DIR = SHARED / "data" / "rakuten_sample"
PG_ADMIN_URL = os.environ.get(
    "RAKUTEN_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_available() -> str | None:
    """None when a Postgres server answers, else the reason it does not."""
    import sqlalchemy as sa

    try:
        with sa.create_engine(PG_ADMIN_URL).connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        return f"no PostgreSQL at {PG_ADMIN_URL}: {exc.__class__.__name__}"
    return None


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Admin URL of a real Postgres; skipped with a reason when none runs (a failure under .ci/run)."""
    reason = _postgres_available()
    if reason:
        if os.environ.get("RAKUTEN_REQUIRE_POSTGRES"):
            pytest.fail(f"RAKUTEN_REQUIRE_POSTGRES is set but {reason}")
        pytest.skip(reason)
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A throwaway Postgres database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"rk_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_server.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from rakuten_mlops.db.engine import engine_for

    engine_for(url).dispose()
    engine_for.cache_clear()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """One real SeaweedFS S3 server for the whole session (killed: it takes seconds to stop on SIGTERM)."""
    from support.seaweedfs import start_seaweedfs

    proc, server = start_seaweedfs(tmp_path_factory.mktemp("seaweed"))
    yield server
    proc.kill()
    proc.wait(timeout=10)
