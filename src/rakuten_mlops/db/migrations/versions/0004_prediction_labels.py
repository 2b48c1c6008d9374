"""Label feedback: prediction_labels, feedback_evaluations, and predictions looked up by productid.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIGPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "prediction_labels",
        sa.Column("id", BIGPK, primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(36), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("prdtypecode", sa.Integer, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("prediction_created_at", TS, nullable=False),
        sa.UniqueConstraint("prediction_id", "revision", name="uq_prediction_labels_revision"),
    )
    op.create_index("ix_prediction_labels_received_at", "prediction_labels", ["received_at"])
    op.create_index("ix_prediction_labels_model_version", "prediction_labels", ["model_version"])
    op.create_index(
        "ix_prediction_labels_prediction_created_at", "prediction_labels", ["prediction_created_at"]
    )
    op.create_table(
        "feedback_evaluations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("window_end", TS, nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("f1_weighted", sa.Float, nullable=False),
        sa.Column("f1_macro", sa.Float, nullable=False),
        sa.Column("accuracy", sa.Float, nullable=False),
    )
    op.create_index("ix_feedback_evaluations_model_version", "feedback_evaluations", ["model_version"])
    # on a partitioned predictions table the index is created on every partition, present and future
    op.create_index("ix_predictions_productid", "predictions", ["productid"])


def downgrade() -> None:
    op.drop_index("ix_predictions_productid", table_name="predictions")
    op.drop_table("feedback_evaluations")
    op.drop_table("prediction_labels")
