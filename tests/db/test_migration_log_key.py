"""Migration 0006 on SQLite and on a real Postgres: the prediction log's primary key becomes
``(prediction_id, created_at)`` on Postgres (one unique index per row instead of two), every row
and its ``id`` are kept, ids still come from the sequence, a duplicate ``prediction_id`` of the
same instant is still refused; down and up again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from tests.support import temporary_database

REVISION = "0006"


def unique_indexes(url: str) -> dict[str, list[str]]:
    """Unique index name -> its columns, on ``predictions`` (the parent table on Postgres)."""
    from rakuten_mlops.db.engine import engine_for

    with engine_for(url).connect() as conn:
        if conn.dialect.name == "postgresql":
            rows = conn.execute(
                sa.text(
                    "SELECT c.relname, array_agg(a.attname ORDER BY k.n) FROM pg_index i"
                    " JOIN pg_class c ON c.oid = i.indexrelid"
                    " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
                    " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
                    " WHERE i.indrelid = 'predictions'::regclass AND i.indisunique GROUP BY c.relname"
                )
            )
            return {name: list(columns) for name, columns in rows}
        found = {}
        for index in conn.execute(sa.text("PRAGMA index_list(predictions)")).mappings():
            if index["unique"]:
                info = conn.execute(sa.text(f"PRAGMA index_info('{index['name']}')")).mappings()
                found[index["name"]] = [c["name"] for c in info]
        return found


def primary_key(url: str) -> list[str]:
    from rakuten_mlops.db.engine import engine_for

    return sa.inspect(engine_for(url)).get_pk_constraint("predictions")["constrained_columns"]


def row(created_at: datetime, prediction_id: str | None = None) -> dict:
    return {"prediction_id": prediction_id or str(uuid.uuid4()), "created_at": created_at, "model_version": "1",
            "prdtypecode": 10, "confidence": 0.9, "text_length": 20, "word_count": 3,
            "description_empty": False, "oov_rate": 0.0, "productid": None}  # fmt: skip


def logged(url: str) -> list[tuple]:
    from rakuten_mlops.db.engine import engine_for

    with engine_for(url).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT id, prediction_id, created_at FROM predictions ORDER BY id"))]  # fmt: skip


def test_the_log_key_migrates_down_and_up_keeping_every_row(database_url):
    from rakuten_mlops.db import engine as db_engine
    from rakuten_mlops.db.engine import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction
    from rakuten_mlops.serving.prediction_log import PredictionRecord, insert_predictions

    postgres = database_url.startswith("postgresql")
    now = datetime.now(UTC)
    upgrade(database_url, "0005")
    with engine_for(database_url).begin() as conn:  # logged before the migration: today, 3 days ago
        conn.execute(sa.insert(Prediction.__table__), [row(now), row(now), row(now - timedelta(days=3))])
    before = logged(database_url)
    if postgres:
        assert primary_key(database_url) == ["id", "created_at"]
        assert sorted(unique_indexes(database_url).values()) == [["id", "created_at"], ["prediction_id", "created_at"]]  # fmt: skip

    upgrade(database_url, REVISION)
    assert logged(database_url) == before
    if postgres:
        assert primary_key(database_url) == ["prediction_id", "created_at"]
        assert list(unique_indexes(database_url).values()) == [["prediction_id", "created_at"]]
    else:  # SQLite keeps 0001's table
        assert primary_key(database_url) == ["id"]
        assert ["prediction_id"] in unique_indexes(database_url).values()

    # the API's writer (COPY on Postgres) still gets ids from the sequence, after the old ones
    record = PredictionRecord(f"{uuid.uuid4().hex}-000", now, "1", 10, 0.5, 20, 3, False, None, None)
    insert_predictions(database_url, [record])
    new_id, new_prediction = logged(database_url)[-1][:2]
    assert new_prediction == record.prediction_id and new_id > max(r[0] for r in before)
    # the same prediction id at the same instant is refused, as before
    with pytest.raises(sa.exc.IntegrityError), engine_for(database_url).begin() as conn:
        conn.execute(sa.insert(Prediction.__table__), [row(now, record.prediction_id)])

    command.downgrade(db_engine.alembic_config(database_url), "0005")
    if postgres:
        assert primary_key(database_url) == ["id", "created_at"]
        assert sorted(unique_indexes(database_url).values()) == [["id", "created_at"], ["prediction_id", "created_at"]]  # fmt: skip
    upgrade(database_url, REVISION)
    assert len(logged(database_url)) == len(before) + 1
    engine_for(database_url).dispose()


@pytest.mark.postgres
def test_partitions_made_after_the_migration_get_the_new_key(pg_server):
    """Retention creates the days ahead as partitions of the parent: they take its key."""
    from rakuten_mlops.db import retention
    from rakuten_mlops.db.engine import engine_for, upgrade

    with temporary_database(pg_server, "rk_logkey_part") as url:
        upgrade(url)
        day = datetime.now(UTC).date() + timedelta(days=30)
        with engine_for(url).begin() as conn:
            name = retention.create_day_partition(conn, day)
            keys = conn.execute(
                sa.text(
                    "SELECT pg_get_indexdef(indexrelid) FROM pg_index"
                    " WHERE indrelid = CAST(:t AS regclass) AND indisunique"
                ),
                {"t": name},
            ).scalars()
            assert [k.split(" USING ")[1] for k in keys] == ["btree (prediction_id, created_at)"]
        engine_for(url).dispose()
