"""The prediction log: a bounded in-memory queue written to ``predictions`` in batches.

Requests only append to the queue (never wait on the database). A background thread writes
up to ``flush_rows`` rows at a time, at least every ``flush_seconds``. If the database is down
the batch is kept and retried while new rows wait in the queue; when the queue is full new
rows are dropped and counted. ``close()`` writes whatever is left (graceful shutdown).
"""

from __future__ import annotations

import csv
import io
import logging
import queue
import threading
import time
from datetime import datetime
from typing import NamedTuple

log = logging.getLogger("rakuten_mlops.serving")


class PredictionRecord(NamedTuple):
    """One row of ``predictions`` (a plain tuple: cheap to make on the request path)."""

    prediction_id: str
    created_at: datetime
    model_version: str
    prdtypecode: int
    confidence: float
    text_length: int
    word_count: int
    description_empty: bool
    oov_rate: float | None
    productid: int | None


COLUMNS = ", ".join(PredictionRecord._fields)


class PredictionLog:
    """Bounded queue + one writer thread."""

    def __init__(
        self,
        database_url: str,
        *,
        max_queue: int = 50_000,
        flush_rows: int = 500,
        flush_seconds: float = 1.0,
        metrics=None,
    ):
        self.database_url = database_url
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=max_queue)
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[PredictionRecord] = []
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._retry_delay = 0.0

    # --- producer side (request path) ----------------------------------------------
    def append(self, records: list[PredictionRecord]) -> int:
        """Queue records without blocking; returns how many were dropped because the queue is full."""
        dropped = 0
        for record in records:
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                dropped += 1
        if dropped:
            self.dropped += dropped
            if self._metrics:
                self._metrics.log_dropped.inc(dropped)
        if self._metrics:
            self._metrics.log_queue_depth.set(self._queue.qsize())
        return dropped

    @property
    def depth(self) -> int:
        return self._queue.qsize() + len(self._pending)

    # --- writer side ---------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 15.0) -> None:
        """Stop the writer after writing everything queued (bounded by ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        from rakuten_mlops.db.engine import upgrade

        try:
            upgrade(self.database_url)
        except Exception as exc:  # the writer retries each batch; the API keeps serving
            self.last_error = str(exc)
            log.warning("prediction log: cannot migrate the database yet: %s", exc)
        while not self._stop.is_set():
            self._collect(deadline=time.monotonic() + self.flush_seconds)
            if self._pending:
                self._write_pending()
                if self._retry_delay:
                    self._stop.wait(self._retry_delay)
        # graceful shutdown: drain the queue, a few attempts only
        for _ in range(3):
            self._collect(deadline=time.monotonic())
            while self._pending:
                if not self._write_pending():
                    break
                self._collect(deadline=time.monotonic())
            if not self._pending and self._queue.empty():
                return
            time.sleep(0.5)
        log.warning("prediction log: %d rows not written at shutdown: %s", self.depth, self.last_error)

    def _collect(self, deadline: float) -> None:
        """Move queued rows to the pending batch until it is full, the deadline passes or close() is called."""
        while len(self._pending) < self.flush_rows:
            timeout = deadline - time.monotonic()
            try:
                if timeout <= 0 or self._stop.is_set():
                    self._pending.append(self._queue.get_nowait())
                else:
                    self._pending.append(self._queue.get(timeout=min(timeout, 0.25)))
            except queue.Empty:
                if timeout <= 0 or self._stop.is_set():
                    return

    def _write_pending(self) -> bool:
        from rakuten_mlops.db.engine import upgrade

        rows = self._pending
        try:
            upgrade(self.database_url)
            insert_predictions(self.database_url, rows)
        except Exception as exc:
            self.last_error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self._retry_delay = min(max(self._retry_delay * 2, 0.5), 10.0)
            log.warning("prediction log: %d rows not written yet (%s)", len(rows), self.last_error)
            return False
        self._retry_delay = 0.0
        self.last_error = None
        self.written += len(rows)
        self._pending = []
        if self._metrics:
            self._metrics.log_written.inc(len(rows))
            self._metrics.log_queue_depth.set(self._queue.qsize())
        return True


def insert_predictions(database_url: str, rows: list[PredictionRecord]) -> None:
    """Bulk insert at driver level: COPY on Postgres, executemany on SQLite (the writer thread
    shares the GIL with the request path, so per-row Python work matters)."""
    from rakuten_mlops.db.engine import engine_for

    engine = engine_for(database_url)
    dialect = engine.dialect.name
    if dialect == "postgresql":
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)  # None -> empty unquoted field -> NULL
        buffer.seek(0)
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                cursor.copy_expert(f"COPY predictions ({COLUMNS}) FROM STDIN WITH (FORMAT csv)", buffer)
            raw.commit()
        finally:
            raw.close()
    elif dialect == "sqlite":  # the same text layout SQLAlchemy's DateTime uses on SQLite
        naive = [(r[0], r[1].strftime("%Y-%m-%d %H:%M:%S.%f"), *r[2:]) for r in rows]
        marks = ", ".join("?" * len(PredictionRecord._fields))
        with engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO predictions ({COLUMNS}) VALUES ({marks})", naive)
    else:
        from sqlalchemy import insert

        from rakuten_mlops.db.models import Prediction

        with engine.begin() as conn:
            conn.execute(insert(Prediction.__table__), [r._asdict() for r in rows])
