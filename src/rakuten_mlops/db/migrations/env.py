from alembic import context
from sqlalchemy import text

from rakuten_mlops.db.engine import MIGRATION_LOCK_KEY
from rakuten_mlops.db.models import Base

config = context.config


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Processes migrating the same database (API pods starting together) take turns; the
            # lock is held until this transaction commits, so the next one reads the new revision
            # and has nothing left to do. SQLite's write lock already serialises them.
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        context.run_migrations()
    connection.commit()


if config.attributes.get("connection") is not None:  # db.engine.upgrade: connected already
    run_migrations(config.attributes["connection"])
else:
    engine = config.attributes.get("engine")
    if engine is None:  # plain `alembic` invocation
        from sqlalchemy import create_engine

        engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        run_migrations(connection)
