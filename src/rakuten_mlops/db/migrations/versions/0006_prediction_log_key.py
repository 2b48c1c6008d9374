"""The prediction log's primary key is ``(prediction_id, created_at)``; ``(id, created_at)`` goes.

Every ``COPY`` of the API's writer adds each row to every index of the day's partition. Until
now two of them were unique: the primary key ``(id, created_at)`` and ``(prediction_id,
created_at)``. The second is the key readers use (labels attach to a ``prediction_id``, the
chaos tests and ``doctor`` look rows up by it); nothing looks rows up by ``id``, which stays a
column, still drawn from ``predictions_id_seq`` (the feedback look-up breaks ties between
predictions of the same instant by the highest ``id``). So on Postgres the primary key becomes
``(prediction_id, created_at)`` and the separate unique constraint is dropped: one index less
to update per row, the same uniqueness. The new key's index is built on every partition while
the migration holds the table (the API's writer keeps its rows queued and retries meanwhile).

SQLite keeps the 0001 table: ``id`` is its primary key, ``prediction_id`` is unique on its own.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UNIQUE = "uq_predictions_prediction_id_created_at"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")
    op.drop_constraint("predictions_pkey", "predictions", type_="primary")
    op.drop_constraint(UNIQUE, "predictions", type_="unique")
    op.create_primary_key("predictions_pkey", "predictions", ["prediction_id", "created_at"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")
    op.drop_constraint("predictions_pkey", "predictions", type_="primary")
    op.create_primary_key("predictions_pkey", "predictions", ["id", "created_at"])
    op.create_unique_constraint(UNIQUE, "predictions", ["prediction_id", "created_at"])
