"""The prediction log by day: migration 0002 on a populated Postgres log, the retention run on both
backends, and the API's writer (COPY) into the partitioned table."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from rakuten_mlops.db import engine_for, upgrade
from rakuten_mlops.db import retention as ret
from rakuten_mlops.db.engine import alembic_config
from rakuten_mlops.serving.prediction_log import PredictionLog, PredictionRecord, insert_predictions
from rakuten_mlops.settings import Settings

COLUMNS = (
    "id, prediction_id, created_at, model_version, prdtypecode, confidence, text_length, word_count, "
    "description_empty, oov_rate, productid"
)


def record(created_at: datetime, n: int = 0) -> PredictionRecord:
    return PredictionRecord(
        f"{uuid.uuid4().hex}-{n:03x}", created_at, "3", 1160, 0.5 + n / 100, 40 + n, 6, n % 2 == 0, None, n
    )


def midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def rows(url: str, after_id: int = 0) -> list[tuple]:
    from rakuten_mlops.db.models import Prediction

    table = Prediction.__table__
    query = sa.select(*(table.c[c] for c in COLUMNS.split(", "))).where(table.c.id > after_id)
    with engine_for(url).connect() as conn:
        return [tuple(r) for r in conn.execute(query.order_by(table.c.id))]


def partition_of(url: str) -> dict[int, str]:
    with engine_for(url).connect() as conn:
        return dict(conn.execute(sa.text("SELECT id, tableoid::regclass::text FROM predictions")).all())


@pytest.mark.postgres
def test_migration_0002_keeps_every_row_partitions_by_day_and_the_writer_still_copies(pg_url):
    upgrade(pg_url, "0001")
    now = datetime.now(UTC)
    today = now.date()
    stamps = [
        now,
        midnight(today),  # a day's first instant belongs to that day
        midnight(today) - timedelta(microseconds=1),  # the previous day's last one
        now - timedelta(days=3),
        now - timedelta(days=45),
        now - timedelta(days=45, hours=1),
    ]
    insert = sa.text(
        "INSERT INTO predictions (prediction_id, created_at, model_version, prdtypecode, confidence, "
        "text_length, word_count, description_empty, oov_rate, productid) "
        "VALUES (:p, :t, '3', 1160, 0.75, 40, 6, false, 0.1, :n)"
    )
    with engine_for(pg_url).begin() as conn:
        for n, stamp in enumerate(stamps):
            conn.execute(insert, {"p": str(uuid.uuid4()), "t": stamp, "n": n})
    before = rows(pg_url)

    upgrade(pg_url, "0002")

    assert rows(pg_url) == before, "every row, with its id, is in the new table"
    with engine_for(pg_url).connect() as conn:
        assert ret.is_partitioned(conn)
        days = ret.day_partitions(conn)
        assert conn.execute(sa.text("SELECT DISTINCT sample_rate FROM predictions")).scalars().all() == [1.0]
        assert conn.execute(sa.text("SELECT count(*) FROM predictions_default")).scalar() == 0
    assert {today + timedelta(days=n) for n in range(ret.PARTITIONS_AHEAD + 1)} <= set(days)
    where = partition_of(pg_url)
    for row in before:
        assert where[row[0]] == ret.partition_name(row[2].astimezone(UTC).date()), row

    # the API's writer: COPY through the parent, into today's partition; a day without a
    # partition (a far-off clock) lands in the default partition instead of failing the COPY
    log = PredictionLog(pg_url, flush_rows=2, flush_seconds=0.05, sample_rate=1.0)
    log.start()
    log.append([record(now, 1), record(now, 2)])
    log.append([record(now + timedelta(days=400), 3)])
    log.close()
    assert (log.written, log.last_error) == (3, None)
    new = rows(pg_url, after_id=before[-1][0])
    where = partition_of(pg_url)
    assert [where[r[0]] for r in new] == [ret.partition_name(today)] * 2 + [ret.DEFAULT_PARTITION]
    with (
        engine_for(pg_url).begin() as conn,
        pytest.raises(sa.exc.IntegrityError),
    ):  # (prediction_id, created_at)
        conn.execute(insert, {"p": new[0][1], "t": new[0][2], "n": 9})

    command.downgrade(alembic_config(pg_url), "0001")  # and back: every row, one plain table
    assert rows(pg_url) == before + new
    with engine_for(pg_url).connect() as conn:
        assert not ret.is_partitioned(conn)


@pytest.mark.postgres
def test_retention_drops_expired_days_creates_ahead_and_moves_rows_out_of_the_default_partition(pg_url):
    upgrade(pg_url)
    now = datetime.now(UTC)
    today = now.date()
    with engine_for(pg_url).begin() as conn:
        ret.create_day_partition(conn, today - timedelta(days=40))
    batches = {
        -45: 3,  # default partition, expired: deleted
        -40: 4,  # own partition, expired: dropped
        -20: 2,  # default partition, kept: moved into a new partition
        -1: 1,  # default partition (the migration started at today), kept: moved
        0: 2,  # today's partition
    }
    for offset, count in batches.items():
        insert_predictions(pg_url, [record(now + timedelta(days=offset), n) for n in range(count)], 0.5)
    settings = Settings(database_url=pg_url)

    result = ret.run_retention(settings, 30, now=now, ahead=ret.PARTITIONS_AHEAD + 2)

    day = lambda offset: ret.partition_name(today + timedelta(days=offset))  # noqa: E731
    assert result.cutoff == midnight(today - timedelta(days=30))
    assert result.dropped_partitions == [day(-40)]
    assert result.created_partitions == [day(-20), day(-1), day(8), day(9)]
    assert (result.moved_from_default, result.deleted_rows) == (3, 3)
    where = partition_of(pg_url)
    assert sorted(where.values()) == sorted([day(-20)] * 2 + [day(-1)] + [day(0)] * 2)
    with engine_for(pg_url).connect() as conn:
        assert conn.execute(sa.text("SELECT DISTINCT sample_rate FROM predictions")).scalars().all() == [0.5]
        assert day(-40) not in set(ret.day_partitions(conn).values())

    again = ret.run_retention(settings, 30, now=now, ahead=ret.PARTITIONS_AHEAD + 2)
    assert (again.dropped_partitions, again.created_partitions, again.deleted_rows) == ([], [], 0)


@pytest.mark.postgres
def test_retention_gives_up_with_a_clear_error_when_a_long_query_holds_an_expired_day(pg_url, monkeypatch):
    upgrade(pg_url)
    old = datetime.now(UTC).date() - timedelta(days=40)
    with engine_for(pg_url).begin() as conn:
        name = ret.create_day_partition(conn, old)
    monkeypatch.setattr(ret, "LOCK_TIMEOUT", "50ms")
    reader = sa.create_engine(pg_url)
    with reader.connect() as conn:
        conn.execute(sa.text(f"SELECT count(*) FROM {name}"))  # holds ACCESS SHARE until rollback
        with pytest.raises(ret.DatabaseError, match="locked by other sessions") as caught:
            ret.run_retention(Settings(database_url=pg_url), 30)
        conn.rollback()
    reader.dispose()
    assert caught.value.exit_code == 5
    with engine_for(pg_url).connect() as conn:
        assert name in ret.day_partitions(conn).values(), "nothing dropped"
    assert ret.run_retention(Settings(database_url=pg_url), 30).dropped_partitions == [name]


@pytest.mark.postgres
def test_a_second_retention_run_waits_for_the_first(pg_url):
    import threading

    from tests.support import wait_until

    upgrade(pg_url)
    holder = sa.create_engine(pg_url)
    done: list[ret.RetentionResult] = []
    with holder.connect() as conn:  # the first run, as far as the lock goes
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": ret.RETENTION_LOCK_KEY})
        second = threading.Thread(
            target=lambda: done.append(ret.run_retention(Settings(database_url=pg_url)))
        )
        second.start()
        waiting = sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'advisory'"
        )
        wait_until(lambda: conn.execute(waiting).scalar() == 1, timeout=30, what="second run waiting")
        assert not done
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": ret.RETENTION_LOCK_KEY})
        conn.commit()
    second.join(30)
    holder.dispose()
    assert len(done) == 1


def test_retention_on_sqlite_deletes_expired_rows_in_batches(sqlite_url):
    upgrade(sqlite_url)
    now = datetime.now(UTC)
    cutoff = midnight(now.date() - timedelta(days=30))
    stamps = [cutoff - timedelta(days=15)] * 5 + [cutoff - timedelta(microseconds=1)] * 2
    kept = [cutoff, cutoff + timedelta(hours=1), now]
    insert_predictions(sqlite_url, [record(t, n) for n, t in enumerate(stamps + kept)])

    result = ret.run_retention(Settings(database_url=sqlite_url), 30, now=now, batch_rows=2)

    assert (result.backend, result.cutoff, result.deleted_rows) == ("sqlite", cutoff, 7)
    assert [r[2].replace(tzinfo=UTC) for r in rows(sqlite_url)] == kept


def test_retention_command_reads_the_setting_and_refuses_zero_days(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rakuten_mlops.cli import app
    from rakuten_mlops.settings import get_settings

    url = f"sqlite:///{tmp_path / 'data.db'}"
    upgrade(url)
    now = datetime.now(UTC)
    insert_predictions(url, [record(now - timedelta(days=10), 0), record(now, 1)])
    for name, value in (("HOME", tmp_path), ("DATABASE_URL", url), ("PREDICTION_RETENTION_DAYS", "5")):
        monkeypatch.setenv(f"RAKUTEN_{name}", str(value))
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["retention", "--json"])
        refused = CliRunner().invoke(app, ["retention", "--days", "0"])
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 0, done.output
    assert (json.loads(done.stdout)["days"], json.loads(done.stdout)["deleted_rows"]) == (5, 1)
    assert refused.exit_code == 2 and "--days" in refused.output


def test_sampled_log_keeps_about_its_share_and_records_the_rate(db_url):
    log = PredictionLog(db_url, flush_rows=1000, flush_seconds=0.05, sample_rate=0.2)
    log.start()
    now = datetime.now(UTC)
    for batch in range(20):
        log.append([record(now, n) for n in range(100 * batch, 100 * batch + 100)])
    log.close()
    with engine_for(db_url).connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar()
        rates = conn.execute(sa.text("SELECT DISTINCT sample_rate FROM predictions")).scalars().all()
    assert 320 <= count <= 480, "binomial(2000, 0.2): 400 +- 4.5 sd"
    assert (log.written, log.dropped, rates) == (count, 0, [0.2])
