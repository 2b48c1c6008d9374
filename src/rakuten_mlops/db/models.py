"""Tables of the platform's data database (identical on SQLite and Postgres)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT autoincrement primary keys do not autoincrement on SQLite: use INTEGER there.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class LoadBatch(Base):
    """Audit row of one incremental load: which slice of which source, and how it ended."""

    __tablename__ = "load_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text)
    source_digest: Mapped[str] = mapped_column(String(64))
    row_start: Mapped[int] = mapped_column(Integer)
    row_end: Mapped[int] = mapped_column(Integer)
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    order_seed: Mapped[int] = mapped_column(Integer, default=42)
    source_rows: Mapped[int] = mapped_column(Integer, default=0)
    checksum: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|succeeded|failed
    message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class Product(Base):
    """A labelled catalogue product; ``split`` is fixed by a stable hash of ``productid``."""

    __tablename__ = "products"

    productid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    imageid: Mapped[int | None] = mapped_column(BigInteger)
    designation: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    prdtypecode: Mapped[int] = mapped_column(Integer, index=True)
    split: Mapped[str] = mapped_column(String(5), index=True)  # train|test
    batch_id: Mapped[int] = mapped_column(ForeignKey("load_batches.id"), index=True)
    source_row: Mapped[int] = mapped_column(Integer)
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prediction(Base):
    """One prediction served by the API (the prediction log that monitoring reads).

    On Postgres the table is partitioned by day of ``created_at`` (one partition per UTC day,
    plus a default partition; see :mod:`rakuten_mlops.db.retention`). A partitioned table's
    unique constraints must hold the partition key, so there the primary key is
    ``(prediction_id, created_at)`` (migration 0006; the API makes every ``prediction_id`` from a
    fresh UUID, so ids do not repeat across days either); its index, ``prediction_id`` first,
    serves look-ups by ``prediction_id`` (one probe per partition, fewer when a ``created_at``
    range is given). ``id`` is a plain column there, still drawn from its sequence, with no index
    (no reader looks rows up by it; the API's writer would update one more index per row).
    SQLite keeps ``id`` as its primary key and ``prediction_id`` unique on its own. The mapping
    below keeps ``id`` as the ORM's identity on both.

    ``sample_rate`` is the share of predictions the API logged when it wrote the row
    (``RAKUTEN_PREDICTION_LOG_SAMPLE``): each row stands for ``1 / sample_rate`` predictions.
    """

    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_created_at", "created_at"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    model_version: Mapped[str] = mapped_column(String(32))  # read inside created_at windows only
    prdtypecode: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)
    text_length: Mapped[int] = mapped_column(Integer)
    word_count: Mapped[int] = mapped_column(Integer)
    description_empty: Mapped[bool] = mapped_column(Boolean)
    oov_rate: Mapped[float | None] = mapped_column(Float)
    productid: Mapped[int | None] = mapped_column(BigInteger)
    sample_rate: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    # top classes and probabilities (rakuten_mlops.model.probabilities), for the performance estimate
    probabilities: Mapped[bytes | None] = mapped_column(LargeBinary)


class DriftReport(Base):
    """Summary of one drift check (the full Evidently report lives in files and MLflow)."""

    __tablename__ = "drift_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    model_version: Mapped[str | None] = mapped_column(String(32))
    window_start: Mapped[datetime | None] = mapped_column()
    window_end: Mapped[datetime | None] = mapped_column()
    n_reference: Mapped[int] = mapped_column(Integer, default=0)
    n_current: Mapped[int] = mapped_column(Integer, default=0)
    severity: Mapped[str] = mapped_column(String(8))  # none|low|medium|high
    drifted: Mapped[bool] = mapped_column(Boolean, default=False)
    summary: Mapped[dict] = mapped_column(JSON)
    html_path: Mapped[str | None] = mapped_column(Text)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))


class LiveEvaluation(Base):
    """Live accuracy of a model version on a newly loaded labelled batch."""

    __tablename__ = "live_evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    model_version: Mapped[str] = mapped_column(String(32), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("load_batches.id"))
    n_rows: Mapped[int] = mapped_column(Integer)
    f1_weighted: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float] = mapped_column(Float)


class PerformanceEstimate(Base):
    """Estimated (and, once labels exist, realized) performance of a model version over one window."""

    __tablename__ = "performance_estimates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    model_version: Mapped[str] = mapped_column(String(32), index=True)
    window: Mapped[str] = mapped_column(String(16))
    window_start: Mapped[datetime] = mapped_column()
    window_end: Mapped[datetime] = mapped_column()
    n: Mapped[int] = mapped_column(Integer)
    f1_weighted: Mapped[float | None] = mapped_column(Float)
    f1_weighted_low: Mapped[float | None] = mapped_column(Float)
    f1_weighted_high: Mapped[float | None] = mapped_column(Float)
    f1_macro: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    trusted: Mapped[bool] = mapped_column(Boolean)
    realized_f1_weighted: Mapped[float | None] = mapped_column(Float)
    n_labelled: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict] = mapped_column(JSON)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))


class ModelEvent(Base):
    """Training decisions, promotions, rollbacks, rollouts and retrain decisions, with reasons."""

    __tablename__ = "model_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    event_type: Mapped[str] = mapped_column(String(32), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str | None] = mapped_column(String(32))
    previous_version: Mapped[str | None] = mapped_column(String(32))
    decision: Mapped[str | None] = mapped_column(String(32))
    candidate_f1: Mapped[float | None] = mapped_column(Float)
    production_f1: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(64), default="system")
    details: Mapped[dict | None] = mapped_column(JSON)


class RegistryLock(Base):
    """One row per registered model; ``SELECT ... FOR UPDATE`` on it serialises promotions."""

    __tablename__ = "registry_locks"

    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PredictionLabel(Base):
    """A true class received for a logged prediction (``POST /feedback``).

    Rows are only added: a prediction's label is its row with the highest ``revision``, a new
    revision is written only when the code or the source differs from that label. The prediction
    is found by ``prediction_id`` (no foreign key: ``predictions`` may be partitioned by day);
    its model version and time are copied so windows are selected here and the join to
    ``predictions`` can be restricted to the matching ``created_at``.
    """

    __tablename__ = "prediction_labels"
    __table_args__ = (UniqueConstraint("prediction_id", "revision", name="uq_prediction_labels_revision"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(String(36))
    revision: Mapped[int] = mapped_column(Integer)
    prdtypecode: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    model_version: Mapped[str] = mapped_column(String(32), index=True)
    prediction_created_at: Mapped[datetime] = mapped_column(index=True)


class FeedbackEvaluation(Base):
    """Realized accuracy of a model version on the feedback labels of one window of predictions."""

    __tablename__ = "feedback_evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    model_version: Mapped[str] = mapped_column(String(32), index=True)
    window_start: Mapped[datetime] = mapped_column()
    window_end: Mapped[datetime] = mapped_column()
    n_rows: Mapped[int] = mapped_column(Integer)
    f1_weighted: Mapped[float] = mapped_column(Float)
    f1_macro: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float] = mapped_column(Float)


# ``POST /feedback`` finds the latest prediction of a productid; rows without one stay out.
Index(
    "ix_predictions_productid",
    Prediction.productid,
    postgresql_where=Prediction.productid.is_not(None),
    sqlite_where=Prediction.productid.is_not(None),
)
