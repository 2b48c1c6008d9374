"""Prediction log by day: ``predictions`` partitioned by UTC day on Postgres; ``sample_rate`` column.

Postgres: the table is rebuilt as ``PARTITION BY RANGE (created_at)`` in one transaction
under an ACCESS EXCLUSIVE lock (writers wait, the API keeps their rows queued): the old
table is renamed, a partition is created for every day that holds rows, today and the next
days, and a DEFAULT partition; every row is copied with its ``id`` (the id sequence is kept),
then the old table is dropped. A partitioned table's unique constraints must contain the
partition key: the primary key becomes ``(id, created_at)`` and ``prediction_id`` is unique
with ``created_at``; that index, ``prediction_id`` first, also serves look-ups by id alone.

SQLite: only the ``sample_rate`` column is added.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# the columns of 0001's predictions, in order (id excepted)
COLUMNS = (
    "prediction_id, created_at, model_version, prdtypecode, confidence, text_length, word_count, "
    "description_empty, oov_rate, productid"
)


def _sample_rate() -> sa.Column:
    return sa.Column("sample_rate", sa.Float, nullable=False, server_default=sa.text("1"))


def _columns(*, partitioned: bool) -> list[sa.Column]:
    """0001's columns; the id keeps drawing from the table's existing sequence."""
    next_id = sa.text("nextval('predictions_id_seq'::regclass)")
    return [
        sa.Column(
            "id", sa.BigInteger, primary_key=not partitioned, autoincrement=False, server_default=next_id
        ),
        sa.Column("prediction_id", sa.String(36), nullable=False, unique=not partitioned),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("prdtypecode", sa.Integer, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("text_length", sa.Integer, nullable=False),
        sa.Column("word_count", sa.Integer, nullable=False),
        sa.Column("description_empty", sa.Boolean, nullable=False),
        sa.Column("oov_rate", sa.Float),
        sa.Column("productid", sa.BigInteger),
    ]


def _set_aside(old_name: str, unique_constraint: str) -> None:
    """Rename the locked table out of the way, free its index names, detach the id sequence."""
    op.execute("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")
    op.execute(f"ALTER TABLE predictions RENAME TO {old_name}")
    op.execute(f"ALTER TABLE {old_name} RENAME CONSTRAINT predictions_pkey TO {old_name}_pkey")
    op.execute(f"ALTER TABLE {old_name} DROP CONSTRAINT {unique_constraint}")
    for index in ("ix_predictions_created_at", "ix_predictions_model_version"):
        op.drop_index(index, table_name=old_name)
    op.execute("ALTER SEQUENCE predictions_id_seq OWNED BY NONE")


def _copy_from(old_name: str) -> None:
    op.execute("ALTER SEQUENCE predictions_id_seq OWNED BY predictions.id")
    op.execute(f"INSERT INTO predictions (id, {COLUMNS}) SELECT id, {COLUMNS} FROM {old_name}")
    op.drop_table(old_name)  # with its partitions, if any


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        op.add_column("predictions", _sample_rate())
        return
    from rakuten_mlops.db import retention

    _set_aside("predictions_0001", "predictions_prediction_id_key")
    op.create_table(
        "predictions",
        *_columns(partitioned=True),
        _sample_rate(),
        postgresql_partition_by="RANGE (created_at)",
    )
    days = set(
        bind.execute(
            sa.text("SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM predictions_0001")
        ).scalars()
    )
    today = datetime.now(UTC).date()
    days |= {today + timedelta(days=n) for n in range(retention.PARTITIONS_AHEAD + 1)}
    for day in sorted(days):
        retention.create_day_partition(bind, day)
    retention.create_default_partition(bind)
    _copy_from("predictions_0001")
    # constraints and indexes built once over the copied rows (faster than row by row)
    op.create_primary_key("predictions_pkey", "predictions", ["id", "created_at"])
    op.create_unique_constraint(
        "uq_predictions_prediction_id_created_at", "predictions", ["prediction_id", "created_at"]
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_model_version", "predictions", ["model_version"])


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        with op.batch_alter_table("predictions") as batch:
            batch.drop_column("sample_rate")
        return
    _set_aside("predictions_0002", "uq_predictions_prediction_id_created_at")
    op.create_table("predictions", *_columns(partitioned=False))
    _copy_from("predictions_0002")
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_model_version", "predictions", ["model_version"])
