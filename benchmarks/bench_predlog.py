"""The prediction log at 10 million rows: day partitions (migration 0002) against the unpartitioned
0001 layout, on Postgres.

Setup (timed, reported): 10M rows spread evenly over the last 30 days, written in time order
by one ``INSERT ... SELECT generate_series`` into a database at revision 0001 (its indexes
built after the load); a file copy of that database (``CREATE DATABASE ... TEMPLATE``) is
migrated to head, which partitions it by day (0002), then, timed apart, gives the log its
``(prediction_id, created_at)`` key (0006, which holds the table while it builds the key on every
partition: the time the API's writer queues its rows during an upgrade).

Measured, the two layouts side by side:
- the drift check's query (``current_window``'s columns over a 1-day window, all rows fetched),
  alternating rounds, median and best;
- retention keeping 10 days: ``rakuten-mlops retention``'s run (drops 20 day partitions)
  against a batched ``DELETE`` of the same rows (10,000 per transaction) on the 0001 layout,
  then the ``VACUUM`` that the deleted rows still need there; one run each (destructive);
- the table's size (heap + indexes, every partition) before and after.

Run: ``python -m benchmarks.bench_predlog`` or ``make bench-predlog`` (not part of ``make bench``;
needs Postgres at 127.0.0.1:5432; BENCH_PREDLOG_ROWS, default 10,000,000; about 15 minutes and
6 GB of disk on 2 cores).
"""

from __future__ import annotations

import hashlib
import os
import re
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from benchmarks.common import PG_ADMIN, print_table

DAYS = 30
KEEP_DAYS = 10
ROUNDS = 7
ROWS = int(os.environ.get("BENCH_PREDLOG_ROWS", "10000000"))
LOOKUPS = 200
QUERY_COLUMNS = "model_version, prdtypecode, confidence, text_length, word_count, description_empty, oov_rate"
CODES = (
    "10,40,50,60,1140,1160,1180,1280,1281,1300,1301,1302,1320,1560,1920,1940,2060,2220,2280,2403,2462,"
    "2522,2582,2583,2585,2705,2905"
)

# 0001's predictions columns, generated in created_at order; prediction ids are md5 UUIDs.
LOAD = f"""
INSERT INTO predictions (id, prediction_id, created_at, model_version, prdtypecode, confidence,
                         text_length, word_count, description_empty, oov_rate, productid)
SELECT g, md5(g::text)::uuid::text,
       CAST(:start AS timestamptz) + make_interval(secs => g * :step),
       CASE WHEN g % 10 = 0 THEN '3' ELSE '4' END,
       (ARRAY[{CODES}])[1 + g % 27],
       0.3 + (g % 70) / 100.0,
       20 + (g * 7919) % 900, 3 + (g * 104729) % 120, g % 5 = 0,
       ((g * 31) % 100) / 500.0, 100000 + g
FROM generate_series(1::bigint, :rows) AS g
"""


def _print_rounds(results: dict[str, list[float]], unit: str) -> None:
    """Median and best of each layout's rounds, and the median's ratio to the 0001 layout's."""
    peer = statistics.median(results["0001"])
    print_table(
        ["layout", f"median {unit}", f"best {unit}", "median vs 0001"],
        [
            [k, statistics.median(v), min(v), f"{peer / statistics.median(v):.2f}x"]
            for k, v in results.items()
        ],
    )


def _admin():
    return sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")


def _url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def _size(conn, partitioned: bool) -> int:
    if partitioned:
        query = "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('predictions')"
    else:
        query = "SELECT pg_total_relation_size('predictions')"
    return int(conn.execute(sa.text(query)).scalar())


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _load(url: str, rows: int, start: datetime) -> float:
    """Fill a 0001 database: rows in time order, then the 0001 indexes (same names) over them."""
    from rakuten_mlops.db.engine import engine_for, upgrade

    upgrade(url, "0001")
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE predictions DROP CONSTRAINT predictions_prediction_id_key"))
        conn.execute(sa.text("DROP INDEX ix_predictions_created_at, ix_predictions_model_version"))
    step = DAYS * 86400.0 / rows
    began = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL maintenance_work_mem = '256MB'"))
        conn.execute(sa.text(LOAD), {"start": start, "step": step, "rows": rows})
        conn.execute(sa.text("SELECT setval('predictions_id_seq', :n)"), {"n": rows})
        conn.execute(
            sa.text(
                "ALTER TABLE predictions ADD CONSTRAINT predictions_prediction_id_key UNIQUE (prediction_id)"
            )
        )
        conn.execute(sa.text("CREATE INDEX ix_predictions_created_at ON predictions (created_at)"))
        conn.execute(sa.text("CREATE INDEX ix_predictions_model_version ON predictions (model_version)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE predictions"))
    seconds = time.perf_counter() - began
    engine.dispose()
    return seconds


def _query(url: str, start: datetime, end: datetime) -> int:
    from rakuten_mlops.db.engine import engine_for

    with engine_for(url).connect() as conn:
        return len(
            conn.execute(
                sa.text(
                    f"SELECT {QUERY_COLUMNS} FROM predictions WHERE created_at >= :s AND created_at <= :e"
                ),
                {"s": start, "e": end},
            ).all()
        )


def _lookup(url: str, ids: list[int]) -> None:
    from rakuten_mlops.db.engine import engine_for

    query = sa.text("SELECT id, created_at FROM predictions WHERE prediction_id = :p")
    with engine_for(url).connect() as conn:
        for g in ids:
            row = conn.execute(query, {"p": str(uuid.UUID(hashlib.md5(str(g).encode()).hexdigest()))}).one()
            assert row.id == g


def _server_ms(url: str, start: datetime, end: datetime) -> float:
    """The query's execution time inside Postgres (EXPLAIN ANALYZE, no rows sent to the client)."""
    from rakuten_mlops.db.engine import engine_for

    with engine_for(url).connect() as conn:
        lines = conn.execute(
            sa.text(
                f"EXPLAIN (ANALYZE, TIMING OFF) SELECT {QUERY_COLUMNS} FROM predictions "
                "WHERE created_at >= :s AND created_at <= :e"
            ),
            {"s": start, "e": end},
        ).scalars()
        text = "\n".join(lines)
    return sum(float(m) for m in re.findall(r"(?:Planning|Execution) Time: ([\d.]+) ms", text))


def _plan(url: str, start: datetime, end: datetime) -> str:
    from rakuten_mlops.db.engine import engine_for

    with engine_for(url).connect() as conn:
        lines = conn.execute(
            sa.text(
                f"EXPLAIN SELECT {QUERY_COLUMNS} FROM predictions WHERE created_at >= :s AND created_at <= :e"
            ),
            {"s": start, "e": end},
        ).scalars()
        return "\n".join(lines)


def main() -> None:
    from benchmarks.common import throwaway_postgres

    with throwaway_postgres() as probe:  # skipped, like the other benchmarks, without a server
        if probe is None:
            return

    from rakuten_mlops.db.engine import engine_for, upgrade
    from rakuten_mlops.db.retention import delete_before, run_retention
    from rakuten_mlops.monitoring.drift import current_window
    from rakuten_mlops.settings import Settings

    print(f"load average at start: {os.getloadavg()}")
    now = datetime.now(UTC)
    start = now - timedelta(days=DAYS)
    tag = uuid.uuid4().hex[:8]
    flat, parted = f"rk_bench_predlog_{tag}_0001", f"rk_bench_predlog_{tag}_parted"
    flat_url, parted_url = _url(flat), _url(parted)
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{flat}"'))
        load_s = _load(flat_url, ROWS, start)
        engine_for.cache_clear()
        with admin.connect() as conn:
            copy_s = _timed(lambda: conn.execute(sa.text(f'CREATE DATABASE "{parted}" TEMPLATE "{flat}"')))
        migrate_s = _timed(lambda: upgrade(parted_url, "0005"))
        key_s = _timed(lambda: upgrade(parted_url))  # 0006 holds the table while it builds the new key
        with engine_for(parted_url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE predictions"))
        print(
            f"setup: {ROWS:,} rows loaded into 0001 in {load_s:.1f}s, database copied in {copy_s:.1f}s, "
            f"migrated to 0005 (partitioned) in {migrate_s:.1f}s, then to head in {key_s:.1f}s "
            f"(0006, the table locked: {key_s / ROWS * 1e6:.2f}s per million rows, "
            f"{key_s / migrate_s:.2f}x the partitioning's time)"
        )
        sizes = {}
        for name, url, partitioned in (("0001", flat_url, False), ("partitioned", parted_url, True)):
            with engine_for(url).connect() as conn:
                count = conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar()
                sizes[name] = [_size(conn, partitioned)]
            print(f"{name}: {count:,} rows, {sizes[name][0] / 2**20:,.0f} MiB")

        # --- the drift check's query over one day (day 15 of 30), alternating rounds
        day_start = datetime.combine((start + timedelta(days=15)).date(), datetime.min.time(), UTC)
        day_end = day_start + timedelta(days=1)
        print("plan, partitioned:\n" + _plan(parted_url, day_start, day_end))
        print("plan, 0001:\n" + _plan(flat_url, day_start, day_end))
        server: dict[str, list[float]] = {"0001": [], "partitioned": []}
        for _ in range(ROUNDS):
            for name, url in (("0001", flat_url), ("partitioned", parted_url)):
                server[name].append(_server_ms(url, day_start, day_end))
        print(
            f"\nthe same query inside Postgres (planning + execution, EXPLAIN ANALYZE), {ROUNDS} alternating rounds:"
        )
        _print_rounds(server, "ms")
        times: dict[str, list[float]] = {"0001": [], "partitioned": [], "current_window (partitioned)": []}
        settings = Settings(database_url=parted_url)
        rows_in_day = _query(flat_url, day_start, day_end)
        assert rows_in_day == _query(parted_url, day_start, day_end)
        for _ in range(ROUNDS):
            times["0001"].append(_timed(lambda: _query(flat_url, day_start, day_end)))
            times["partitioned"].append(_timed(lambda: _query(parted_url, day_start, day_end)))
            times["current_window (partitioned)"].append(
                _timed(lambda: current_window(settings, day_start, day_end, "4"))
            )
        print(
            f"\ndrift check query, 1-day window ({rows_in_day:,} rows fetched), {ROUNDS} alternating rounds:"
        )
        _print_rounds(times, "s")

        # --- look-ups by prediction_id (what attaching a label does), alternating rounds
        lookups: dict[str, list[float]] = {"0001": [], "partitioned": []}
        ids = [(n * 7_654_321) % ROWS + 1 for n in range(LOOKUPS)]
        for _ in range(ROUNDS):
            for name, url in (("0001", flat_url), ("partitioned", parted_url)):
                lookups[name].append(_timed(lambda u=url: _lookup(u, ids)) / LOOKUPS)
        print(
            f"\nlook-up of one row by prediction_id ({LOOKUPS} ids per round), {ROUNDS} alternating rounds:"
        )
        _print_rounds({k: [1000 * t for t in v] for k, v in lookups.items()}, "ms")

        # --- retention: keep 10 days
        retention = run_retention(settings, KEEP_DAYS, now=now)
        cutoff = retention.cutoff
        flat_engine = engine_for(flat_url)
        with flat_engine.connect() as conn:
            expired = conn.execute(
                sa.text("SELECT count(*) FROM predictions WHERE created_at < :c"), {"c": cutoff}
            ).scalar()
        delete_start = time.perf_counter()
        deleted = delete_before(flat_engine, cutoff, 10_000)
        delete_s = time.perf_counter() - delete_start
        with flat_engine.connect() as conn:
            sizes["0001"].append(_size(conn, False))
        with flat_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            vacuum_s = _timed(lambda: conn.execute(sa.text("VACUUM predictions")))
        with flat_engine.connect() as conn:
            sizes["0001"].append(_size(conn, False))
        with engine_for(parted_url).connect() as conn:
            sizes["partitioned"].append(_size(conn, True))
            sizes["partitioned"].append(sizes["partitioned"][-1])
            left = conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar()
        assert deleted == expired, (deleted, expired)
        print(
            f"\nretention keeping {KEEP_DAYS} days (cutoff {cutoff.isoformat()}): {expired:,} expired rows; "
            f"partitioned: dropped {len(retention.dropped_partitions)} partitions, {left:,} rows left"
        )
        print_table(
            ["layout", "retention s", "then VACUUM s", "vs partitioned"],
            [
                ["partitioned (drop partitions)", retention.seconds, 0.0, "1x"],
                [
                    "0001 (batched DELETE)",
                    delete_s,
                    vacuum_s,
                    f"{(delete_s + vacuum_s) / retention.seconds:,.1f}x",
                ],
            ],
        )
        print("\ntable size (heap + indexes), MiB:")
        print_table(
            ["layout", "before", "after retention", "after VACUUM"],
            [[k, *(v / 2**20 for v in sizes[k])] for k in ("0001", "partitioned")],
        )
    finally:
        engine_for.cache_clear()
        with admin.connect() as conn:
            for name in (flat, parted):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
