"""The prediction log: a bounded in-memory queue written to ``predictions`` in batches.

Requests only append to the queue (never wait on the database). A background thread writes
up to ``flush_rows`` rows at a time, at least every ``flush_seconds``. If the database is down
the batch is kept and retried while new rows wait in the queue; when the queue is full new
rows are dropped and counted. ``close()`` writes whatever is left (graceful shutdown).

The queue is a deque of the request batches' rows under one condition variable, and the writer
is woken only when a full batch is waiting (or at its deadline), not for every row: each wake-up
takes the GIL from the request path. On Postgres the rows are turned into COPY text as they are
queued, one request batch at a time, so the writer only sends: formatting a whole write in the
writer thread would hold the GIL, and the requests in flight would wait.

With ``sample_rate`` below 1 (``RAKUTEN_PREDICTION_LOG_SAMPLE``) each row is kept with that
probability, decided when it is queued, and written with its ``sample_rate``: a logged row
stands for ``1 / sample_rate`` predictions.
"""

from __future__ import annotations

import csv
import io
import logging
import random
import re
import threading
import time
from collections import deque
from datetime import datetime
from itertools import repeat
from typing import NamedTuple

log = logging.getLogger("rakuten_mlops.serving")

MAX_RETRY_DELAY_SECONDS = 10.0  # a failed write is retried after 0.5 s, doubling up to this


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
    probabilities: bytes | None = None  # rakuten_mlops.model.probabilities layout


COLUMNS = ", ".join([*PredictionRecord._fields, "sample_rate"])
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')
_BYTEA_HEX = "\\x"  # bytea's hex input prefix
_FEW_ROWS = 8  # fewer rows are formatted one by one: the columns' set-up costs more than it saves
_ROW = "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,\\x%s,%s\n"  # one row of copy_text, the blob in bytea's hex


class _Chunk(NamedTuple):
    """The rows of one ``append`` call: on Postgres only their count and COPY text (the records
    are let go once formatted, so a queue filled while the database is down holds one string per
    request batch, not a dozen objects per row), elsewhere the rows themselves."""

    count: int
    rows: list[PredictionRecord] | None
    copy_text: str | None


def copy_text(rows: list[PredictionRecord], sample_rate: float = 1.0) -> str:
    """``rows`` as the CSV that ``COPY predictions FROM STDIN (FORMAT csv)`` reads (None -> NULL),
    each with ``sample_rate``.

    Only the model version may hold characters CSV must quote (prediction ids are hex and
    dashes): without any, each row is one f-string, else the csv module quotes. Probabilities
    (bytes) are written in bytea's hex input form.
    """
    stamps = {created: str(created) for created in {row[1] for row in rows}}  # a batch shares one
    rate = repr(float(sample_rate))  # formatted once for the whole batch
    if any(_NEEDS_QUOTES.search(version) for version in {row[2] for row in rows}):
        buffer = io.StringIO()
        csv.writer(buffer).writerows(
            [
                (
                    row[0],
                    stamps[row[1]],
                    *row[2:10],
                    "" if row[10] is None else _BYTEA_HEX + row[10].hex(),
                    rate,
                )
                for row in rows
            ]
        )
        return buffer.getvalue()
    columns = [*zip(*rows, strict=True)] if len(rows) >= _FEW_ROWS and len(stamps) == 1 else None
    if columns and None not in columns[10]:
        # the request path's batches (one timestamp, every blob): each row is one %-format of a
        # tuple zipped from the columns, without a Python call per row
        oov, productid = (
            ["" if value is None else value for value in column] if None in column else column
            for column in columns[8:10]
        )
        return "".join(
            map(
                _ROW.__mod__,
                zip(
                    *columns[0:1], repeat(stamps[rows[0][1]]), *columns[2:8], oov, productid,
                    map(bytes.hex, columns[10]), repeat(rate),
                ),
            )
        )  # fmt: skip
    return "".join(
        [
            f"{pid},{stamps[at]},{version},{code},{confidence},{length},{words},{empty},"
            f"{'' if oov is None else oov},{'' if productid is None else productid},"
            f"{'' if blob is None else _BYTEA_HEX + blob.hex()},{rate}\n"
            for pid, at, version, code, confidence, length, words, empty, oov, productid, blob in rows
        ]
    )


class PredictionLog:
    """Bounded queue + one writer thread."""

    def __init__(
        self,
        database_url: str,
        *,
        max_queue: int = 50_000,
        flush_rows: int = 500,
        flush_seconds: float = 1.0,
        sample_rate: float = 1.0,
        metrics=None,
    ):
        self.database_url = database_url
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_queue = max_queue
        self.sample_rate = sample_rate
        self._random = random.Random()
        self._copy = _is_postgres(database_url)
        self._queue: deque[_Chunk] = deque()
        self._queued_rows = 0
        self._ready = threading.Condition(threading.Lock())
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[_Chunk] = []
        self._pending_rows = 0
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._retry_delay = 0.0

    # --- producer side (request path) ----------------------------------------------
    def append(self, records: list[PredictionRecord]) -> int:
        """Queue records without blocking; returns how many were dropped because the queue is full."""
        if self.sample_rate < 1.0:
            keep, rate = self._random.random, self.sample_rate
            records = [record for record in records if keep() < rate]
        room = self.max_queue - self._queued_rows  # read without the lock: checked again below
        accepted = records if len(records) <= room else records[: max(room, 0)]
        chunk = self._chunk(accepted)  # formatted outside the lock
        with self._ready:
            queued = self._queued_rows
            if len(accepted) > self.max_queue - queued:  # another request filled it meanwhile
                accepted = accepted[: max(self.max_queue - queued, 0)]
                chunk = self._chunk(accepted)
            if accepted:
                self._queue.append(chunk)
                self._queued_rows = depth = queued + len(accepted)
            else:
                depth = queued
            if queued < self.flush_rows <= depth:
                self._ready.notify()
        dropped = len(records) - len(accepted)
        if dropped:
            self.dropped += dropped
            if self._metrics:
                self._metrics.log_dropped.inc(dropped)
        if self._metrics:
            self._metrics.log_queue_depth.set(depth)
        return dropped

    def _chunk(self, rows: list[PredictionRecord]) -> _Chunk:
        if self._copy:
            return _Chunk(len(rows), None, copy_text(rows, self.sample_rate) if rows else "")
        return _Chunk(len(rows), rows, None)

    @property
    def depth(self) -> int:
        return self._queued_rows + self._pending_rows

    # --- writer side ---------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 15.0) -> None:
        """Stop the writer after writing everything queued (bounded by ``timeout``)."""
        self._stop.set()
        with self._ready:
            self._ready.notify()
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
            if not self._pending and not self._queue:
                return
            time.sleep(0.5)
        log.warning("prediction log: %d rows not written at shutdown: %s", self.depth, self.last_error)

    def _collect(self, deadline: float) -> None:
        """Move queued chunks to the pending batch once a batch is full, the deadline passes or close() is called."""
        with self._ready:
            while self._pending_rows + self._queued_rows < self.flush_rows and not self._stop.is_set():
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                self._ready.wait(timeout)
            # whole chunks (one per request batch): a write may pass flush_rows by one chunk
            while self._queue and (not self._pending or self._pending_rows < self.flush_rows):
                chunk = self._queue.popleft()
                self._queued_rows -= chunk.count
                self._pending.append(chunk)
                self._pending_rows += chunk.count

    def _write_pending(self) -> bool:
        from rakuten_mlops.db.engine import upgrade

        chunks, count = self._pending, self._pending_rows
        try:
            upgrade(self.database_url)
            if self._copy:
                copy_predictions(self.database_url, "".join(chunk.copy_text for chunk in chunks))
            else:
                rows = [row for chunk in chunks for row in chunk.rows]
                insert_predictions(self.database_url, rows, self.sample_rate)
        except Exception as exc:
            self.last_error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self._retry_delay = min(max(self._retry_delay * 2, 0.5), MAX_RETRY_DELAY_SECONDS)
            log.warning("prediction log: %d rows not written yet (%s)", count, self.last_error)
            return False
        self._retry_delay = 0.0
        self.last_error = None
        self.written += count
        self._pending, self._pending_rows = [], 0
        if self._metrics:
            self._metrics.log_written.inc(count)
            self._metrics.log_queue_depth.set(self._queued_rows)
        return True


def _is_postgres(database_url: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        return make_url(database_url).get_backend_name() == "postgresql"
    except Exception:  # an invalid URL fails (and is reported) when the writer connects
        return False


def copy_predictions(database_url: str, text: str) -> None:
    """COPY rows already formatted by :func:`copy_text` into ``predictions`` (one transaction)."""
    from rakuten_mlops.db.engine import engine_for

    raw = engine_for(database_url).raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(
                f"COPY predictions ({COLUMNS}) FROM STDIN WITH (FORMAT csv)", io.StringIO(text)
            )
        raw.commit()
    finally:
        raw.close()


def insert_predictions(database_url: str, rows: list[PredictionRecord], sample_rate: float = 1.0) -> None:
    """Bulk insert at driver level: COPY on Postgres, executemany on SQLite (the writer thread
    shares the GIL with the request path, so per-row Python work matters)."""
    from rakuten_mlops.db.engine import engine_for

    engine = engine_for(database_url)
    dialect = engine.dialect.name
    if dialect == "postgresql":
        copy_predictions(database_url, copy_text(rows, sample_rate))
    elif dialect == "sqlite":  # the same text layout SQLAlchemy's DateTime uses on SQLite
        naive = [(r[0], r[1].strftime("%Y-%m-%d %H:%M:%S.%f"), *r[2:], sample_rate) for r in rows]
        marks = ", ".join("?" * (len(PredictionRecord._fields) + 1))
        with engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO predictions ({COLUMNS}) VALUES ({marks})", naive)
    else:
        from sqlalchemy import insert

        from rakuten_mlops.db.models import Prediction

        with engine.begin() as conn:
            conn.execute(
                insert(Prediction.__table__), [r._asdict() | {"sample_rate": sample_rate} for r in rows]
            )
