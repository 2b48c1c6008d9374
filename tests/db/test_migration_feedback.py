"""The label-feedback migration on SQLite and on a real Postgres: it creates what the models
declare, goes down and up again, and keeps existing predictions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

REVISION = "0004"
FEEDBACK_TABLES = {"prediction_labels", "feedback_evaluations"}


def revision_below() -> str:
    from alembic.script import ScriptDirectory

    from rakuten_mlops.db.engine import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(REVISION).down_revision


def schema_differences(url: str) -> list:
    """What alembic's autogenerate sees between the migrated schema and the models (our tables)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from rakuten_mlops.db.engine import engine_for
    from rakuten_mlops.db.models import Base

    with engine_for(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)

    names = (*FEEDBACK_TABLES, "ix_predictions_productid")
    return [entry for entry in diff if any(name in repr(entry) for name in names)]


def test_feedback_migration_matches_the_models_and_goes_down_and_up(database_url):
    from rakuten_mlops.db import engine as db_engine
    from rakuten_mlops.db.engine import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction

    upgrade(database_url, revision_below())
    with engine_for(database_url).begin() as conn:  # a prediction logged before the migration
        conn.execute(
            sa.insert(Prediction.__table__),
            [{"prediction_id": str(uuid.uuid4()), "created_at": datetime.now(UTC), "model_version": "1",
              "prdtypecode": 10, "confidence": 0.9, "text_length": 20, "word_count": 3,
              "description_empty": False, "oov_rate": 0.0, "productid": 42}],
        )  # fmt: skip
    upgrade(database_url, REVISION)
    inspector = sa.inspect(engine_for(database_url))
    assert set(inspector.get_table_names()) >= FEEDBACK_TABLES
    assert "ix_predictions_productid" in {i["name"] for i in inspector.get_indexes("predictions")}
    assert schema_differences(database_url) == []

    from alembic import command

    command.downgrade(db_engine.alembic_config(database_url), revision_below())
    inspector = sa.inspect(engine_for(database_url))
    assert not FEEDBACK_TABLES & set(inspector.get_table_names())
    assert "ix_predictions_productid" not in {i["name"] for i in inspector.get_indexes("predictions")}
    upgrade(database_url, REVISION)
    with engine_for(database_url).connect() as conn:
        assert conn.execute(sa.text("select count(*) from predictions where productid = 42")).scalar() == 1
    engine_for(database_url).dispose()
