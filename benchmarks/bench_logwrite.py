"""What the keys and indexes of ``predictions`` cost the prediction log's writes, on Postgres.

The API's writer sends each request batch's rows with one ``COPY`` (``serving/prediction_log.py``);
Postgres updates every index of the day's partition for every row, and a profile of the backend
(``perf``) shows the index insertions as more than half of its CPU. This writes 1,000-row
batches as the API formats them (a batch's prediction ids share one random or time-ordered part,
one timestamp, one model version; with random product ids, or none as bench_serve sends), each
layout in a fresh database of its own:

- ``0005``: primary key ``(id, created_at)`` and a unique ``(prediction_id, created_at)``, the
  ids' first part a random UUID (version 4), as before migration 0006;
- ``0006, random ids``: primary key ``(prediction_id, created_at)`` only, the same random ids;
- ``0006, time-ordered ids`` (head): the same key, the ids' first part a UUID version 7
  (``serving.predictor.time_ordered_id``), as the API makes them now.

Every layout keeps the secondary indexes of head (``created_at``; ``productid`` where not NULL).
The layouts alternate for BENCH_LOGWRITE_ROUNDS rounds (default 5) of BENCH_LOGWRITE_BATCHES
(default 40) COPYs each, each database growing round after round as a day's partition does. The
table reports medians per 1,000-row COPY: the wall time (commit included) and the CPU time of the
Postgres backend (from /proc: Postgres runs on this host), which a loaded machine disturbs less.

Run: ``python -m benchmarks.bench_logwrite`` (needs Postgres at 127.0.0.1:5432; about a minute).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from benchmarks.common import print_table, process_cpu, throwaway_postgres

ROUNDS = int(os.environ.get("BENCH_LOGWRITE_ROUNDS", "5"))
BATCHES = int(os.environ.get("BENCH_LOGWRITE_BATCHES", "40"))
ROWS = 1000


def _time_ordered() -> str:
    from rakuten_mlops.serving.predictor import time_ordered_id

    return time_ordered_id()


def _random() -> str:
    return uuid.uuid4().hex


LAYOUTS: dict[str, tuple[str, Callable[[], str]]] = {  # name -> (revision, the ids' first part)
    "0005: pk (id, created_at) + unique (prediction_id, created_at), random ids": ("0005", _random),
    "0006: pk (prediction_id, created_at), random ids": ("0006", _random),
    "0006: pk (prediction_id, created_at), time-ordered ids (head)": ("0006", _time_ordered),
}


def _batch(rng: random.Random, productids: bool, batch_id: str) -> str:
    from rakuten_mlops.model.probabilities import LOGGED_TOP_K, encode
    from rakuten_mlops.serving.prediction_log import PredictionRecord, copy_text

    codes = [10, 40, 50, 60, 1140, 1160, 1180, 1280, 1281, 1300, 2522, 2583, 2585, 2705, 2905]
    now = datetime.now(UTC)
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
                rng.randint(1, 10**9) if productids else None,
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


def run(urls: dict[str, str]) -> dict[tuple[str, bool], list[tuple[float, float]]]:
    """Alternate the layouts (name -> its database) for ROUNDS rounds, with and without product ids."""
    from rakuten_mlops.db.engine import upgrade

    rng = random.Random(7)
    for name, (revision, first_part) in LAYOUTS.items():
        upgrade(urls[name], revision)
        _timed_copies(urls[name], [_batch(rng, True, first_part()) for _ in range(5)])  # warm-up
    results: dict[tuple[str, bool], list[tuple[float, float]]] = {
        (n, p): [] for n in LAYOUTS for p in (True, False)
    }
    for _ in range(ROUNDS):
        for productids in (True, False):
            for name, (_, first_part) in LAYOUTS.items():
                texts = [_batch(rng, productids, first_part()) for _ in range(BATCHES)]
                results[name, productids].append(_timed_copies(urls[name], texts))
    return results


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f}; {ROUNDS} rounds of {BATCHES} COPYs of {ROWS:,} rows")
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(throwaway_postgres()) for name in LAYOUTS}
        if None in urls.values():
            return
        results = run(urls)
    rows = []
    for (name, productids), runs in results.items():
        wall, cpu = [w for w, _ in runs], [c for _, c in runs]
        base = results[next(iter(LAYOUTS)), productids]
        rows.append([name, "yes" if productids else "no (NULL)", statistics.median(wall),
                     statistics.median(cpu), f"{min(cpu):.1f}-{max(cpu):.1f}",
                     statistics.median(cpu) - statistics.median(c for _, c in base)])  # fmt: skip
    print_table(
        ["keys and ids", "product ids", "wall ms per COPY (median)", "backend CPU ms per COPY", "rounds",
         "CPU vs 0005"],
        rows,
    )  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
