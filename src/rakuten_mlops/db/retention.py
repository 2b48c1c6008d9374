"""Retention of the prediction log: ``rakuten-mlops retention`` keeps the last N days of ``predictions``.

Postgres: ``predictions`` is partitioned by UTC day (``predictions_pYYYYMMDD``, bounds
``[day 00:00+00, next day 00:00+00)``) with a DEFAULT partition ``predictions_default``.
A run

1. creates the partitions of today and the next ``ahead`` days that do not exist yet; a day
   whose rows already sit in the default partition (the job did not run, a client clock
   was off) gets its partition with those rows moved in, in one transaction;
2. drops the partitions of days that ended before the cutoff (no row-by-row delete);
3. deletes the default partition's expired rows in batches.

The API's writer never creates partitions: a row of a day without a partition lands in the
default partition, so a COPY never fails because a partition is missing, and the next run
moves it to its day.

SQLite: expired rows are deleted in batches of ``batch_rows`` (one short write
transaction each, so the API's writer is never locked out for long).

The cutoff is midnight UTC ``days`` days before today: both backends keep today and the
``days`` whole days before it, and drop whole days only.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock

from sqlalchemy import Connection, Engine, text

from rakuten_mlops.db.engine import DatabaseError, engine_for, upgrade
from rakuten_mlops.settings import Settings

TABLE = "predictions"
PARTITION_PREFIX = f"{TABLE}_p"
DEFAULT_PARTITION = f"{TABLE}_default"
PARTITIONS_AHEAD = 7
DELETE_BATCH_ROWS = 10_000
RETENTION_LOCK_KEY = 7_221_002  # pg advisory lock held by a retention run (migrations: 7_221_000)
LOCK_TIMEOUT = "10s"  # dropping a partition waits for queries reading the log, this long at most
LOCK_ATTEMPTS = 3
_NAME_RE = re.compile(rf"^{PARTITION_PREFIX}(\d{{8}})$")


def partition_name(day: date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def _bounds(day: date) -> str:
    return (
        f"FROM ('{day.isoformat()} 00:00:00+00') TO ('{(day + timedelta(days=1)).isoformat()} 00:00:00+00')"
    )


def create_day_partition(conn: Connection, day: date) -> str:
    """``CREATE TABLE predictions_pYYYYMMDD PARTITION OF predictions`` for one UTC day."""
    name = partition_name(day)
    conn.execute(text(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {TABLE} FOR VALUES {_bounds(day)}"))
    return name


def create_default_partition(conn: Connection) -> None:
    conn.execute(text(f"CREATE TABLE IF NOT EXISTS {DEFAULT_PARTITION} PARTITION OF {TABLE} DEFAULT"))


def day_partitions(conn: Connection) -> dict[date, str]:
    """The day partitions of ``predictions`` that exist, by day."""
    names = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:table AS regclass)"
        ),
        {"table": TABLE},
    ).scalars()
    out = {}
    for name in names:
        match = _NAME_RE.match(name)
        if match:
            out[datetime.strptime(match.group(1), "%Y%m%d").date()] = name
    return out


def is_partitioned(conn: Connection) -> bool:
    return bool(
        conn.execute(
            text("SELECT count(*) FROM pg_partitioned_table WHERE partrelid = CAST(:table AS regclass)"),
            {"table": TABLE},
        ).scalar()
    )


@dataclass
class RetentionResult:
    """What one retention run did."""

    backend: str
    days: int
    cutoff: datetime
    deleted_rows: int = 0
    dropped_partitions: list[str] = field(default_factory=list)
    created_partitions: list[str] = field(default_factory=list)
    moved_from_default: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"cutoff": self.cutoff.isoformat()}

    def describe(self) -> list[str]:
        lines = [
            f"prediction log retention ({self.backend}): keeping {self.days} days, "
            f"rows before {self.cutoff.isoformat()} are expired"
        ]
        if self.backend == "postgresql":
            dropped = ", ".join(self.dropped_partitions) or "none"
            created = ", ".join(self.created_partitions) or "none"
            lines.append(f"dropped {len(self.dropped_partitions)} day partitions: {dropped}")
            lines.append(f"created {len(self.created_partitions)} day partitions: {created}")
            if self.moved_from_default:
                lines.append(f"moved {self.moved_from_default:,} rows from {DEFAULT_PARTITION} to their day")
            lines.append(f"deleted {self.deleted_rows:,} expired rows from {DEFAULT_PARTITION}")
        else:
            lines.append(f"deleted {self.deleted_rows:,} expired rows")
        lines.append(f"done in {self.seconds:.2f}s")
        return lines


def cutoff_for(now: datetime, days: int) -> datetime:
    """Midnight UTC ``days`` days before ``now``'s UTC day."""
    today = now.astimezone(UTC).date()
    return datetime.combine(today - timedelta(days=days), clock(), UTC)


def run_retention(
    settings: Settings,
    days: int | None = None,
    *,
    now: datetime | None = None,
    ahead: int = PARTITIONS_AHEAD,
    batch_rows: int = DELETE_BATCH_ROWS,
) -> RetentionResult:
    """Drop (Postgres) or delete (SQLite) the prediction log older than ``days`` whole days."""
    days = settings.prediction_retention_days if days is None else days
    if days < 1:
        raise ValueError(f"retention must keep at least 1 day, got {days}")
    url = settings.database_url
    upgrade(url)
    now = now or datetime.now(UTC)
    engine = engine_for(url)
    result = RetentionResult(engine.dialect.name, days, cutoff_for(now, days))
    started = time.perf_counter()
    if result.backend == "postgresql":
        _postgres(engine, result, now.astimezone(UTC).date(), ahead, batch_rows)
    else:
        result.deleted_rows = delete_before(engine, result.cutoff, batch_rows)
    result.seconds = time.perf_counter() - started
    return result


def delete_before(engine: Engine, cutoff: datetime, batch_rows: int, table: str = TABLE) -> int:
    """Delete the rows of ``table`` created before ``cutoff``, ``batch_rows`` per transaction."""
    from sqlalchemy import bindparam

    deleted = 0
    statement = text(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE created_at < :cutoff LIMIT :n)"
    ).bindparams(bindparam("cutoff", type_=_created_at_type()))
    while True:
        with engine.begin() as conn:
            count = conn.execute(statement, {"cutoff": cutoff, "n": batch_rows}).rowcount
        deleted += count
        if count < batch_rows:
            return deleted


def _created_at_type():
    from rakuten_mlops.db.models import Prediction

    return Prediction.__table__.c.created_at.type


def _postgres(engine: Engine, result: RetentionResult, today: date, ahead: int, batch_rows: int) -> None:
    with engine.connect() as guard:  # one run at a time (a manual run beside the CronWorkflow's)
        guard.execute(text("SELECT pg_advisory_lock(:k)"), {"k": RETENTION_LOCK_KEY})
        guard.commit()
        try:
            with engine.begin() as conn:
                if not is_partitioned(conn):
                    raise DatabaseError(
                        f"{TABLE} is not partitioned: run `rakuten-mlops db upgrade` (migration 0002) first"
                    )
                create_default_partition(conn)
                existing = day_partitions(conn)
                stray = set(
                    conn.execute(
                        text(
                            f"SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM {DEFAULT_PARTITION}"
                        )
                    ).scalars()
                )
            cutoff_day = result.cutoff.date()
            wanted = {today + timedelta(days=n) for n in range(ahead + 1)}
            wanted |= {day for day in stray if day >= cutoff_day}
            for day in sorted(wanted - set(existing)):
                moved = _locked(engine, lambda conn, d=day: _create_partition(conn, d, d in stray))
                result.created_partitions.append(partition_name(day))
                result.moved_from_default += moved
            for day, name in sorted(existing.items()):
                if day < cutoff_day:
                    _locked(engine, lambda conn, n=name: conn.execute(text(f"DROP TABLE IF EXISTS {n}")))
                    result.dropped_partitions.append(name)
            result.deleted_rows = delete_before(engine, result.cutoff, batch_rows, table=DEFAULT_PARTITION)
        finally:
            guard.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RETENTION_LOCK_KEY})
            guard.commit()


def _create_partition(conn: Connection, day: date, has_stray_rows: bool) -> int:
    """Create a day's partition; rows of that day already in the default partition move into it."""
    if not has_stray_rows:
        create_day_partition(conn, day)
        return 0
    name = partition_name(day)
    columns = ", ".join(
        conn.execute(
            text(
                "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            ),
            {"t": TABLE},
        ).scalars()
    )
    # Parent first, then the default partition: writers routing rows there wait, none sneaks in.
    conn.execute(text(f"LOCK TABLE {TABLE} IN SHARE UPDATE EXCLUSIVE MODE"))
    conn.execute(text(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE"))
    conn.execute(text(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    lo, hi = (datetime.combine(d, clock(), UTC) for d in (day, day + timedelta(days=1)))
    moved = conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE created_at >= :lo AND created_at < :hi "
            f"RETURNING {columns}) INSERT INTO {name} ({columns}) SELECT {columns} FROM moved"
        ),
        {"lo": lo, "hi": hi},
    ).rowcount
    conn.execute(text(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES {_bounds(day)}"))
    return moved


def _locked(engine: Engine, step):
    """Run ``step(conn)`` in its own transaction, waiting at most LOCK_TIMEOUT for its locks (retried)."""
    from sqlalchemy.exc import OperationalError

    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                return step(conn)
        except OperationalError as exc:
            if getattr(exc.orig, "pgcode", None) != "55P03":  # lock_not_available
                raise
            if attempt == LOCK_ATTEMPTS:
                raise DatabaseError(
                    f"the prediction log stayed locked by other sessions ({LOCK_ATTEMPTS} waits of "
                    f"{LOCK_TIMEOUT}): a long query is reading it; run the retention again later"
                ) from exc
