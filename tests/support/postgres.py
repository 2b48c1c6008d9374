"""The real Postgres the tests use, and throwaway databases on it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

PG_ADMIN_URL = os.environ.get(
    "RAKUTEN_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def postgres_unavailable(admin_url: str = PG_ADMIN_URL) -> str | None:
    """None when a Postgres server answers, else the reason it does not."""
    import sqlalchemy as sa

    try:
        with sa.create_engine(admin_url).connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        return f"no PostgreSQL at {admin_url}: {exc.__class__.__name__}"
    return None


@contextlib.contextmanager
def temporary_database(admin_url: str, prefix: str = "rk_test") -> Iterator[str]:
    """A new database on the server of ``admin_url``; dropped (connections closed) on exit."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from rakuten_mlops.db.engine import engine_for

        engine_for(url).dispose()
        engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
