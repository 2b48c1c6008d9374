"""Migration 0005 on SQLite and on a real Postgres: the prediction log loses its model_version
index, its productid index skips NULLs and still serves the feedback look-up; down and up again."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tests.support import temporary_database

REVISION = "0005"


def indexes(url: str) -> dict[str, str]:
    """Index name -> its definition (Postgres) or its WHERE clause (SQLite) on ``predictions``."""
    from rakuten_mlops.db.engine import engine_for

    with engine_for(url).connect() as conn:
        if conn.dialect.name == "postgresql":
            rows = conn.execute(
                sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'predictions'")
            )
        else:
            rows = conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'predictions'"))  # fmt: skip
        return {name: definition or "" for name, definition in rows}


def schema_differences(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from rakuten_mlops.db.engine import engine_for
    from rakuten_mlops.db.models import Base

    with engine_for(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return [entry for entry in diff if "ix_predictions" in repr(entry)]


def row(productid: int | None) -> dict:
    return {"prediction_id": str(uuid.uuid4()), "created_at": datetime.now(UTC), "model_version": "1",
            "prdtypecode": 10, "confidence": 0.9, "text_length": 20, "word_count": 3,
            "description_empty": False, "oov_rate": 0.0, "productid": productid}  # fmt: skip


def test_the_log_indexes_migrate_down_and_up(database_url):
    from alembic import command

    from rakuten_mlops.db import engine as db_engine
    from rakuten_mlops.db.engine import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction

    upgrade(database_url, "0004")
    with engine_for(database_url).begin() as conn:  # predictions logged before the migration
        conn.execute(sa.insert(Prediction.__table__), [row(42), row(None)])
    assert {"ix_predictions_model_version", "ix_predictions_productid"} <= set(indexes(database_url))

    upgrade(database_url, REVISION)
    found = indexes(database_url)
    assert "ix_predictions_model_version" not in found
    assert "productid IS NOT NULL" in found["ix_predictions_productid"]
    assert "ix_predictions_created_at" in found
    assert schema_differences(database_url) == []

    command.downgrade(db_engine.alembic_config(database_url), "0004")
    found = indexes(database_url)
    assert "ix_predictions_model_version" in found
    assert "NOT NULL" not in found["ix_predictions_productid"]
    upgrade(database_url, REVISION)
    with engine_for(database_url).connect() as conn:
        assert conn.execute(sa.text("select count(*) from predictions")).scalar() == 2
    engine_for(database_url).dispose()


@pytest.mark.postgres
def test_the_feedback_look_up_uses_the_partial_index(pg_server):
    """``POST /feedback``'s query by ``productid IN (...)`` can use the index that skips NULLs."""
    from rakuten_mlops.db.engine import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction
    from rakuten_mlops.monitoring.feedback import _latest_by_productid

    with temporary_database(pg_server, "rk_logidx_plan") as url:
        upgrade(url)
        with engine_for(url).begin() as conn:
            conn.execute(sa.insert(Prediction.__table__), [row(i if i % 2 else None) for i in range(2000)])
            conn.execute(sa.text("ANALYZE predictions"))
        captured = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            captured.append((statement, parameters))

        engine = engine_for(url)
        sa.event.listen(engine, "before_cursor_execute", capture)
        try:
            with Session(engine) as session:
                session.execute(sa.text("SET enable_seqscan = off"))  # the small table would be scanned
                found = _latest_by_productid(session, {3, 5})
                statement, parameters = captured[-1]
                plan = "\n".join(
                    r[0] for r in session.connection().exec_driver_sql(f"EXPLAIN {statement}", parameters)
                )
        finally:
            sa.event.remove(engine, "before_cursor_execute", capture)
        assert set(found) == {3, 5}
        assert re.search(r"Index (Only )?Scan using \S*productid\S*", plan), plan
        engine_for(url).dispose()
