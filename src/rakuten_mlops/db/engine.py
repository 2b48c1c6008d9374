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
#: Held by every alembic run of the process, ours and MLflow's (see :func:`serialize_mlflow_migrations`):
#: alembic's ``context`` and ``op`` are process-global proxies installed for the length of a run, so
#: two runs at once in two threads (the prediction log's writer migrating the data database while
#: MLflow creates the tables of a new SQL store) would read each other's configuration.
MIGRATION_LOCK = threading.RLock()
_upgrade_lock = threading.Lock()  # one of our upgrades at a time, connection attempt included
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


def alembic_config(url: str, connection=None):
    """Alembic's configuration for ``url``; the migration uses ``connection`` when one is given."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["engine"] = engine_for(url)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def serialize_mlflow_migrations() -> None:
    """Make MLflow's schema upgrades in this process hold :data:`MIGRATION_LOCK` (idempotent).

    MLflow runs alembic in one place, ``mlflow.store.db.utils._upgrade_db``, which every SQL store
    it opens (tracking, registry, jobs) calls through that module when it creates its tables;
    it is wrapped there. :func:`rakuten_mlops.registry.connect`, through which every MLflow
    client of the platform is made, calls this before MLflow opens any store.
    """
    from mlflow.store.db import utils

    if getattr(utils._upgrade_db, "holds_migration_lock", False):
        return
    upgrade_db = utils._upgrade_db

    @functools.wraps(upgrade_db)
    def locked_upgrade_db(engine) -> None:
        with MIGRATION_LOCK:
            upgrade_db(engine)

    locked_upgrade_db.holds_migration_lock = True  # type: ignore[attr-defined]
    utils._upgrade_db = locked_upgrade_db


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent; jobs call it before they touch the database).

    The connection is opened before :data:`MIGRATION_LOCK` is taken: an unreachable database
    keeps MLflow's store creation waiting for no connection attempt."""
    from alembic import command

    with _upgrade_lock:
        if revision == "head" and url in _upgraded:
            return
        try:
            with engine_for(url).connect() as connection, MIGRATION_LOCK:
                command.upgrade(alembic_config(url, connection), revision)
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
