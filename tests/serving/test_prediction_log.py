"""The API's prediction log (``serving.prediction_log``): batched writes, a bounded queue that drops
and counts when full, rows kept while the database is down, and the CSV that COPY reads."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from rakuten_mlops.db import engine as db_engine
from rakuten_mlops.serving.prediction_log import PredictionLog, PredictionRecord
from tests.support import free_port, wait_until


def _records(n: int) -> list[PredictionRecord]:
    now = datetime.now(UTC)
    return [
        PredictionRecord(f"id-{i}-{time.monotonic_ns()}", now, "1", 10, 0.5, 20, 3, True, 0.1, i)
        for i in range(n)
    ]


def test_prediction_log_writes_batches_and_drops_when_full(sqlite_url):
    log = PredictionLog(sqlite_url, max_queue=100, flush_rows=40, flush_seconds=0.2)
    assert log.append(_records(130)) == 30  # queue holds 100: the rest is dropped and counted
    assert log.dropped == 30
    log.start()
    deadline = time.monotonic() + 10
    while log.written < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    assert log.written == 100 and log.depth == 0
    import sqlalchemy as sa

    with sa.create_engine(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("select count(*) from predictions")).scalar() == 100


def test_prediction_log_keeps_rows_while_the_database_is_down():
    down = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nothing"
    log = PredictionLog(down, max_queue=50, flush_rows=10, flush_seconds=0.1)
    dropped: list[int] = []
    with db_engine._upgrade_lock:  # the writer is held before its first migration attempt ...
        log.start()
        writer = log._thread
        appender = threading.Thread(target=lambda: dropped.append(log.append(_records(30))))
        appender.start()
        appender.join(60)
    try:
        assert dropped == [0]  # ... and the request path queued the rows meanwhile: it never waits on it
        # the writer fails to migrate (an error recorded before it takes any row), then takes the
        # 30 rows into its batch and fails to write them: only a failed write sets a retry delay
        wait_until(
            lambda: log._retry_delay > 0 and log._pending_rows == 30,
            timeout=120,
            what="the writer's first failed write of the queued rows",
        )
        assert log.written == 0 and log.depth == 30 and log.last_error  # kept, not lost
        # bounded: the 30 rows of the failed write stay pending in the writer, the queue holds 50 more
        assert log.append(_records(40)) == 0
        assert log.append(_records(40)) == 30
        assert log.dropped == 30 and log.depth == 80
    finally:
        log.close(timeout=120)  # a writer left running would retry its migration in later tests
    assert not writer.is_alive()  # the shutdown's few write attempts are bounded


def test_a_queue_for_postgres_keeps_only_the_copy_text_of_its_rows():
    """While the database is down the queue fills up; on Postgres it holds each request batch's
    COPY text, not the records too (a full queue's memory is what an outage adds to the API's).
    A row as the API makes it: a 36-character id, the top-5 probabilities blob."""
    import tracemalloc

    from rakuten_mlops.model.probabilities import encode

    down = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nothing"
    log = PredictionLog(down, max_queue=20_000)  # not started: everything stays queued
    now = datetime.now(UTC)
    codes, probabilities = [10, 40, 50, 60, 1280], [0.6, 0.2, 0.1, 0.05, 0.05]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            blob = encode(codes, probabilities)
            row = PredictionRecord(
                f"{i:032x}-000", now, "12", 1280, 0.6 + i * 1e-9, 120, 17, False, 0.1, i, blob
            )
            assert log.append([row]) == 0
        per_row = (tracemalloc.get_traced_memory()[0] - before) / 20_000
    finally:
        tracemalloc.stop()
    assert log.depth == 20_000
    # the COPY text of one row (a string of about 180 characters) and its chunk, not the record,
    # its id, its floats and its blob as well
    assert per_row < 400, f"{per_row:.0f} bytes per queued row"


@pytest.mark.parametrize("blobs", [False, True], ids=["no-probabilities", "probabilities"])
@pytest.mark.parametrize("version", ["12", 'odd,"version"'])
def test_copy_text_is_the_csv_copy_reads(version, blobs):
    """Rows as COPY's CSV: NULL for a missing oov_rate or productid, quoted only where needed,
    probabilities in bytea's hex form (the request path's batches, formatted column by column)."""
    import csv
    import io

    from rakuten_mlops.model.probabilities import encode
    from rakuten_mlops.serving.prediction_log import copy_text

    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    first = encode([10, 40, 50, 60, 1140], [0.25, 0.2, 0.1, 0.05, 0.01]) if blobs else None
    second = encode([1280, 10, 40, 50, 60], [0.1234567890123, 0.1, 0.1, 0.05, 1e-7]) if blobs else None
    rows = [
        PredictionRecord("a1-000", now, version, 10, 0.25, 20, 3, True, None, None, first),
        PredictionRecord("a1-001", now, version, 1280, 0.1234567890123, 7, 1, False, 0.5, 42, second),
        PredictionRecord("a1-002", now, version, 10, 1e-05, 0, 0, True, 1.0, None, first),
    ]
    stamp = "2026-01-02 03:04:05.678901+00:00"
    hexed = ["\\x" + blob.hex() if blob else "" for blob in (first, second, first)]
    expected = [
        ["a1-000", stamp, version, "10", "0.25", "20", "3", "True", "", "", hexed[0], "0.2"],
        [
            "a1-001",
            stamp,
            version,
            "1280",
            "0.1234567890123",
            "7",
            "1",
            "False",
            "0.5",
            "42",
            hexed[1],
            "0.2",
        ],
        ["a1-002", stamp, version, "10", "1e-05", "0", "0", "True", "1.0", "", hexed[2], "0.2"],
    ]
    for copies in (1, 4):  # a few rows are formatted one by one, a request batch column by column
        parsed = list(csv.reader(io.StringIO(copy_text(rows * copies, 0.2))))
        assert parsed == expected * copies


def test_prediction_ids_start_with_the_time_so_the_log_key_grows_at_its_end():
    """A batch's prediction ids share a UUID version 7 (milliseconds first, then random bits):
    ids made later sort after earlier ones, which keeps Postgres adding them at the right end of
    the primary key's index; ids made in the same millisecond still differ."""
    import uuid

    from rakuten_mlops.serving.predictor import time_ordered_id

    before_ms = time.time_ns() // 1_000_000
    first = time_ordered_id()
    same_instant = {time_ordered_id() for _ in range(10_000)}
    time.sleep(0.003)
    later = time_ordered_id()
    parsed = uuid.UUID(first)
    assert len(first) == 32 and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert 0 <= int(first[:12], 16) - before_ms <= 1000  # the millisecond it was made
    assert len(same_instant | {first}) == 10_001
    assert later > max(same_instant | {first})
