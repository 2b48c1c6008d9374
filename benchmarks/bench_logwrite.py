"""What each index of ``predictions`` costs the prediction log's writes, on Postgres.

The API's writer sends each request batch's rows with one ``COPY`` (``serving/prediction_log.py``);
Postgres updates every index of the day's partition for every row. This writes 1,000-row
batches as the API formats them (a batch's prediction ids share their random part, one
timestamp, one model version; with random product ids, or none as bench_serve sends) into a
fresh database, under each layout of the secondary indexes (0004's, head's, fewer); the layouts
alternate for BENCH_LOGWRITE_ROUNDS rounds (default 5) of BENCH_LOGWRITE_BATCHES (default 20)
COPYs each. The table reports medians per 1,000-row COPY: the wall time (commit included) and the
CPU time of the Postgres backend (from /proc: Postgres runs on this host), which a loaded machine
disturbs less.

Run: ``python -m benchmarks.bench_logwrite`` (needs Postgres at 127.0.0.1:5432; about a minute).
"""

from __future__ import annotations

import io
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from benchmarks.common import print_table, process_cpu, throwaway_postgres

ROUNDS = int(os.environ.get("BENCH_LOGWRITE_ROUNDS", "5"))
BATCHES = int(os.environ.get("BENCH_LOGWRITE_BATCHES", "20"))
ROWS = 1000
CREATED_AT = "CREATE INDEX ix_predictions_created_at ON predictions (created_at)"
LAYOUTS = {  # the secondary indexes (the primary key and prediction_id's unique index stay)
    "0004: created_at, model_version, productid": [
        CREATED_AT,
        "CREATE INDEX ix_predictions_model_version ON predictions (model_version)",
        "CREATE INDEX ix_predictions_productid ON predictions (productid)",
    ],
    "0005 (head): created_at, productid where not null": [
        CREATED_AT,
        "CREATE INDEX ix_predictions_productid ON predictions (productid) WHERE productid IS NOT NULL",
    ],
    "created_at only": [CREATED_AT],
    "no secondary index": [],
}


def _batch(rng: random.Random, productids: bool) -> str:
    from rakuten_mlops.model.probabilities import LOGGED_TOP_K, encode
    from rakuten_mlops.serving.prediction_log import PredictionRecord, copy_text

    codes = [10, 40, 50, 60, 1140, 1160, 1180, 1280, 1281, 1300, 2522, 2583, 2585, 2705, 2905]
    batch_id, now = uuid.uuid4().hex, datetime.now(UTC)
    records = []
    for i in range(ROWS):
        top = rng.sample(codes, LOGGED_TOP_K)
        p = sorted((rng.random() for _ in top), reverse=True)
        records.append(
            PredictionRecord(
                f"{batch_id}-{i:03x}",
                now,
                "7",
                top[0],
                p[0],
                rng.randint(20, 2000),
                rng.randint(3, 300),
                rng.random() < 0.3,
                rng.random() / 3,
                rng.randint(1, 10**9),
                encode(top, p),
            )  # fmt: skip
        )
    return copy_text(records)


def _timed_copies(url: str, texts: list[str]) -> tuple[float, float]:
    """Median wall milliseconds of one COPY of 1,000 rows, committed, as the writer sends it
    (``copy_predictions``'s statement), and the Postgres backend's CPU milliseconds per COPY."""
    from rakuten_mlops.db.engine import engine_for
    from rakuten_mlops.serving.prediction_log import COLUMNS

    raw = engine_for(url).raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        raw.commit()
        times, cpu = [], process_cpu(pid)
        for text in texts:
            started = time.perf_counter()
            with raw.cursor() as cursor:
                cursor.copy_expert(
                    f"COPY predictions ({COLUMNS}) FROM STDIN WITH (FORMAT csv)", io.StringIO(text)
                )
            raw.commit()
            times.append((time.perf_counter() - started) * 1000)
        cpu = (process_cpu(pid) - cpu) * 1000 / len(texts)
    finally:
        raw.close()
    return statistics.median(times), cpu


def run(url: str) -> dict[tuple[str, bool], list[tuple[float, float]]]:
    from rakuten_mlops.db.engine import engine_for, upgrade

    upgrade(url)
    engine = engine_for(url)
    rng = random.Random(7)

    def layout(statements: list[str]) -> None:
        with engine.begin() as conn:
            for name in (
                "ix_predictions_created_at",
                "ix_predictions_model_version",
                "ix_predictions_productid",
            ):
                conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
            for statement in statements:
                conn.execute(sa.text(statement))

    _timed_copies(url, [_batch(rng, True) for _ in range(5)])  # warm-up: connections, the day's partition
    results: dict[tuple[str, bool], list[tuple[float, float]]] = {
        (n, p): [] for n in LAYOUTS for p in (True, False)
    }
    for _ in range(ROUNDS):
        for name, statements in LAYOUTS.items():
            layout(statements)
            for productids in (True, False):
                with engine.begin() as conn:
                    conn.execute(sa.text("CHECKPOINT"))
                texts = [_batch(rng, productids) for _ in range(BATCHES)]  # fresh ids: they are unique
                results[name, productids].append(_timed_copies(url, texts))
    return results


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f}; {ROUNDS} rounds of {BATCHES} COPYs of {ROWS:,} rows")
    with throwaway_postgres() as url:
        if url is None:
            return
        results = run(url)
    rows = []
    for (name, productids), runs in results.items():
        wall, cpu = [w for w, _ in runs], [c for _, c in runs]
        base = results[next(iter(LAYOUTS)), productids]
        rows.append([name, "yes" if productids else "no (NULL)", statistics.median(wall),
                     statistics.median(cpu), f"{min(cpu):.1f}-{max(cpu):.1f}",
                     statistics.median(cpu) - statistics.median(c for _, c in base)])  # fmt: skip
    print_table(
        ["indexes", "product ids", "wall ms per COPY (median)", "backend CPU ms per COPY", "rounds",
         "CPU vs 0004"],
        rows,
    )  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
