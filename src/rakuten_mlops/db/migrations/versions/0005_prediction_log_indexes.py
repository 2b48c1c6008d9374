"""The prediction log keeps the indexes its readers use: ``model_version`` goes, ``productid`` skips NULLs.

Every ``COPY`` of the API's writer updates each index of the day's partition for each row. No
reader looks predictions up by ``model_version`` alone: the performance estimate selects a
version inside a ``created_at`` window, which ``ix_predictions_created_at`` (and the day
partitions) serve. ``POST /feedback`` finds predictions by ``productid IN (...)``, which a
partial index on the non-NULL product ids serves as well; predictions sent without a product id
no longer enter it. On Postgres the new index is built on every partition while the migration
holds the table (the API's writer keeps its rows queued and retries meanwhile).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NOT_NULL = sa.text("productid IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_predictions_model_version", table_name="predictions")
    op.drop_index("ix_predictions_productid", table_name="predictions")
    op.create_index(
        "ix_predictions_productid",
        "predictions",
        ["productid"],
        postgresql_where=NOT_NULL,
        sqlite_where=NOT_NULL,
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_productid", table_name="predictions")
    op.create_index("ix_predictions_productid", "predictions", ["productid"])
    op.create_index("ix_predictions_model_version", "predictions", ["model_version"])
