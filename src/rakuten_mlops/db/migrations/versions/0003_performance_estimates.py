"""Probability vectors in the prediction log, and the performance estimates table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("predictions", sa.Column("probabilities", sa.LargeBinary))
    op.create_table(
        "performance_estimates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("window", sa.String(16), nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("window_end", TS, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("f1_weighted", sa.Float),
        sa.Column("f1_weighted_low", sa.Float),
        sa.Column("f1_weighted_high", sa.Float),
        sa.Column("f1_macro", sa.Float),
        sa.Column("accuracy", sa.Float),
        sa.Column("trusted", sa.Boolean, nullable=False),
        sa.Column("realized_f1_weighted", sa.Float),
        sa.Column("n_labelled", sa.Integer, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("mlflow_run_id", sa.String(64)),
    )
    op.create_index("ix_performance_estimates_created_at", "performance_estimates", ["created_at"])
    op.create_index("ix_performance_estimates_model_version", "performance_estimates", ["model_version"])


def downgrade() -> None:
    op.drop_index("ix_performance_estimates_model_version", "performance_estimates")
    op.drop_index("ix_performance_estimates_created_at", "performance_estimates")
    op.drop_table("performance_estimates")
    op.drop_column("predictions", "probabilities")
