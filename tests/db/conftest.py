"""Fixtures of the database tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import temporary_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> Iterator[str]:
    """A fresh database, once SQLite and once a throwaway database on the real Postgres."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data.db'}"
        return
    with temporary_database(request.getfixturevalue("pg_server"), "rk_migration") as url:
        yield url
