"""What a database outage leaves in the memory of a process with a prediction log.

One process, as an API worker: a ``PredictionLog`` writing to a private Postgres
(``tests.support.postgres.PrivatePostgres``), fed single-product rows as the predictor makes them
(a 36-character id, the top-5 blob) next to the response-like objects a request also allocates.
Each outage stops Postgres (``pg_ctl stop -m fast``), appends 60,000 rows (the queue keeps 50,000,
drops the rest), starts Postgres and keeps feeding rows until the queue has drained. The table
gives, per outage: RSS at the queue's peak and after the drain, against RSS before the first
outage; CPython's arenas mapped after the drain and the bytes in allocated blocks (from
``sys._debugmallocstats()``), against the same before; with ``BENCH_LOGMEMORY_TRIM=1``, RSS
after ``malloc_trim(0)`` too. Growth that stays at or under the first outage's peak across
outages is the allocator keeping what it had (retention); growth past it would be a leak.

Run: ``python -m benchmarks.bench_logmemory`` (BENCH_LOGMEMORY_OUTAGES, default 8; about a minute).
"""

from __future__ import annotations

import ctypes
import os
import random
import re
import sys
import time
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from benchmarks.common import print_table
from rakuten_mlops.model.probabilities import encode
from rakuten_mlops.serving.prediction_log import PredictionLog, PredictionRecord
from tests.support.postgres import PrivatePostgres

OUTAGES = int(os.environ.get("BENCH_LOGMEMORY_OUTAGES", "8"))
TRIM = os.environ.get("BENCH_LOGMEMORY_TRIM") == "1"
ROWS_PER_OUTAGE = 60_000


def rss_mib() -> float:
    for line in open("/proc/self/status"):  # noqa: SIM115 - a few lines of /proc
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def arenas() -> tuple[int, int]:
    """(arenas mapped now, bytes in allocated blocks) from CPython's allocator statistics."""
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(write)
        os.close(saved)
    text = b""
    while chunk := os.read(read, 1 << 16):
        text += chunk
    os.close(read)
    found = dict(
        re.findall(r"# (arenas allocated current|bytes in allocated blocks)\s+=\s+([\d,]+)", text.decode())
    )
    return int(found["arenas allocated current"].replace(",", "")), int(
        found["bytes in allocated blocks"].replace(",", "")
    )


def one_request(log: PredictionLog) -> None:
    """One single-product request's row, and the response objects that die with the request."""
    codes = random.sample(range(10, 2906), 5)
    probabilities = sorted((random.random() for _ in range(5)), reverse=True)
    response = {
        "top_k": [{"prdtypecode": c, "probability": p} for c, p in zip(codes, probabilities, strict=True)]
    }
    pid = f"{uuid.uuid4().hex}-000"
    response["prediction_id"] = pid
    row = PredictionRecord(
        pid,
        datetime.now(UTC),
        "3",
        codes[0],
        probabilities[0],
        120,
        17,
        False,
        0.1,
        None,
        encode(codes, probabilities),
    )
    log.append([row])


def steady(log: PredictionLog, seconds: float) -> None:
    """About 5,000 requests a second, in bursts of 100."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(100):
            one_request(log)
        time.sleep(0.02)


def main() -> None:
    libc = ctypes.CDLL("libc.so.6")
    with PrivatePostgres() as pg:
        admin = sa.create_engine(pg.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE bench_logmemory"))
        admin.dispose()
        log = PredictionLog(pg.admin_url.rsplit("/", 1)[0] + "/bench_logmemory")
        log.start()
        try:
            steady(log, 5)
            time.sleep(2)
            base_rss, (base_arenas, base_bytes) = rss_mib(), arenas()
            rows = [["before", "", f"{base_rss:.1f}", "", f"{base_arenas}", f"{base_bytes / 1e6:.1f}"]]
            for outage in range(1, OUTAGES + 1):
                pg.stop("fast")
                for _ in range(ROWS_PER_OUTAGE):
                    one_request(log)
                peak = rss_mib()
                pg.start()
                deadline = time.monotonic() + 120
                while log.depth and time.monotonic() < deadline:
                    steady(log, 0.5)
                steady(log, 3)
                after = rss_mib()
                trimmed = ""
                if TRIM:
                    libc.malloc_trim(0)
                    trimmed = f" (trimmed {rss_mib():.1f})"
                mapped, allocated = arenas()
                rows.append(
                    [
                        f"outage {outage}",
                        f"{peak:.1f}",
                        f"{after:.1f}{trimmed}",
                        f"{after - base_rss:+.1f}",
                        f"{mapped}",
                        f"{allocated / 1e6:.1f}",
                    ]
                )
        finally:
            log.close()
    print_table(
        [
            "",
            "RSS at the peak (MiB)",
            "RSS after the drain (MiB)",
            "growth (MiB)",
            "arenas",
            "allocated (MB)",
        ],
        rows,
    )
    print(f"written {log.written}, dropped {log.dropped} (the queue holds {log.max_queue})")


if __name__ == "__main__":
    main()
