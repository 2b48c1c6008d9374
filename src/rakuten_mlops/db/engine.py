"""Engines, sessions and migrations for the data database."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from rakuten_mlops.errors import PlatformError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
MIGRATION_LOCK_KEY = 7_221_000  # pg advisory lock id held while migrating (the loader's is 7_221_001)
_upgrade_lock = threading.Lock()
_upgraded: set[str] = set()


class DatabaseError(PlatformError):
    """The data database cannot be reached or migrated."""

    exit_code = 5


@functools.cache
def engine_for(url: str) -> Engine:
    """One pooled engine per URL; SQLite gets WAL and a busy timeout so jobs and the API can share it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any error."""
    factory = sessionmaker(engine_for(url), expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["engine"] = engine_for(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent; jobs call it before they touch the database)."""
    from alembic import command

    with _upgrade_lock:
        if revision == "head" and url in _upgraded:
            return
        try:
            command.upgrade(alembic_config(url), revision)
        except Exception as exc:  # connection refused, permission denied, ...
            from rakuten_mlops.settings import redact_url

            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise DatabaseError(
                f"cannot reach or migrate the data database {redact_url(url)} ({exc.__class__.__name__}: {first}); "
                "check RAKUTEN_DATABASE_URL and that the server is running"
            ) from exc
        if revision == "head":
            _upgraded.add(url)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
