"""Initial schema: products, load batches, predictions, drift reports, live evaluations, model events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIGPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "load_batches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_digest", sa.String(64), nullable=False),
        sa.Column("row_start", sa.Integer, nullable=False),
        sa.Column("row_end", sa.Integer, nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("order_seed", sa.Integer, nullable=False),
        sa.Column("source_rows", sa.Integer, nullable=False),
        sa.Column("checksum", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
    )
    op.create_table(
        "products",
        sa.Column("productid", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("imageid", sa.BigInteger),
        sa.Column("designation", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("prdtypecode", sa.Integer, nullable=False),
        sa.Column("split", sa.String(5), nullable=False),
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("load_batches.id"), nullable=False),
        sa.Column("source_row", sa.Integer, nullable=False),
        sa.Column("loaded_at", TS, nullable=False),
    )
    op.create_index("ix_products_prdtypecode", "products", ["prdtypecode"])
    op.create_index("ix_products_split", "products", ["split"])
    op.create_index("ix_products_batch_id", "products", ["batch_id"])
    op.create_table(
        "predictions",
        sa.Column("id", BIGPK, primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(36), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("prdtypecode", sa.Integer, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("text_length", sa.Integer, nullable=False),
        sa.Column("word_count", sa.Integer, nullable=False),
        sa.Column("description_empty", sa.Boolean, nullable=False),
        sa.Column("oov_rate", sa.Float),
        sa.Column("productid", sa.BigInteger),
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_model_version", "predictions", ["model_version"])
    op.create_table(
        "drift_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("model_version", sa.String(32)),
        sa.Column("window_start", TS),
        sa.Column("window_end", TS),
        sa.Column("n_reference", sa.Integer, nullable=False),
        sa.Column("n_current", sa.Integer, nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("drifted", sa.Boolean, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("html_path", sa.Text),
        sa.Column("mlflow_run_id", sa.String(64)),
    )
    op.create_index("ix_drift_reports_created_at", "drift_reports", ["created_at"])
    op.create_table(
        "live_evaluations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("load_batches.id"), nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("f1_weighted", sa.Float, nullable=False),
        sa.Column("accuracy", sa.Float, nullable=False),
    )
    op.create_index("ix_live_evaluations_model_version", "live_evaluations", ["model_version"])
    op.create_table(
        "model_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(32)),
        sa.Column("previous_version", sa.String(32)),
        sa.Column("decision", sa.String(32)),
        sa.Column("candidate_f1", sa.Float),
        sa.Column("production_f1", sa.Float),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("details", sa.JSON),
    )
    op.create_index("ix_model_events_created_at", "model_events", ["created_at"])
    op.create_index("ix_model_events_event_type", "model_events", ["event_type"])
    op.create_table(
        "registry_locks",
        sa.Column("model_name", sa.String(128), primary_key=True),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "registry_locks",
        "model_events",
        "live_evaluations",
        "drift_reports",
        "predictions",
        "products",
        "load_batches",
    ):
        op.drop_table(table)
