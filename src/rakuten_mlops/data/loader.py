"""Incremental loading: the first run loads a share of a source, each later run the next slice.

Rows are taken in a fixed, seeded order, so every run adds a representative slice. Each
batch is one transaction (its products and its audit row commit together); a crash leaves
no partial rows and the next run redoes that batch. Concurrent loaders are serialised by a
database lock.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Connection, func, insert, select, text, update

from rakuten_mlops.data.sources import SourceData, read_source
from rakuten_mlops.db import engine_for, upgrade
from rakuten_mlops.db.models import LoadBatch, Product
from rakuten_mlops.errors import DataValidationError
from rakuten_mlops.settings import Settings

TEST_SHARE_PERCENT = 20
LOAD_LOCK_KEY = 7_221_001  # pg advisory lock id of the loader
PRODUCT_COLUMNS = (
    "productid",
    "imageid",
    "designation",
    "description",
    "prdtypecode",
    "split",
    "batch_id",
    "source_row",
    "loaded_at",
)


def split_for(productid: int) -> str:
    """``test`` for a stable 20% of productids, else ``train``: a product never changes side."""
    digest = hashlib.blake2b(str(int(productid)).encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "big") % 100 < TEST_SHARE_PERCENT else "train"


@dataclass(frozen=True)
class LoadPlan:
    initial_fraction: float = 0.4
    batch_fraction: float | None = 0.03
    batch_rows: int | None = None
    seed: int = 42
    load_all: bool = False

    def next_slice(self, total: int, loaded: int) -> tuple[int, int]:
        """[start, end) positions in the seeded order for the next batch."""
        if loaded >= total:
            return loaded, loaded
        if loaded == 0 and not self.load_all:
            size = math.ceil(self.initial_fraction * total)
        elif self.load_all:
            size = total - loaded
        elif self.batch_rows is not None:
            size = self.batch_rows
        else:
            size = math.ceil((self.batch_fraction or 0.0) * total)
        return loaded, min(total, loaded + max(1, size))


@dataclass(frozen=True)
class LoadResult:
    source: str
    batch_id: int | None
    rows: int
    loaded: int
    total: int
    seconds: float
    insert_seconds: float = 0.0

    @property
    def loaded_share(self) -> float:
        return self.loaded / self.total if self.total else 1.0

    def describe(self) -> str:
        if self.batch_id is None:
            return (
                f"nothing to load: all {self.total:,} products of {self.source} are already loaded "
                f"({self.loaded_share:.0%})"
            )
        rate = self.rows / self.insert_seconds if self.insert_seconds > 0 else float("inf")
        return (
            f"loaded batch {self.batch_id}: {self.rows:,} products in {self.seconds:.2f}s "
            f"(source read and validated, then inserted at {rate:,.0f} rows/s); "
            f"{self.loaded:,} of {self.total:,} products of this source are now loaded ({self.loaded_share:.0%})"
        )


def loading_order(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


def _lock(conn: Connection) -> None:
    """Serialise loaders: an advisory lock on Postgres, the database write lock on SQLite."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOAD_LOCK_KEY})
    else:  # the first write of a SQLite transaction takes the database write lock
        conn.execute(text("UPDATE load_batches SET status = status WHERE 0"))


def _loaded_rows(conn: Connection, digest: str) -> tuple[int, int | None]:
    """(rows already loaded from this source, the seed its first batch used)."""
    loaded = conn.execute(
        select(func.coalesce(func.max(LoadBatch.row_end), 0)).where(
            LoadBatch.source_digest == digest, LoadBatch.status == "succeeded"
        )
    ).scalar_one()
    seed = conn.execute(
        select(LoadBatch.order_seed)
        .where(LoadBatch.source_digest == digest, LoadBatch.status == "succeeded")
        .order_by(LoadBatch.id)
        .limit(1)
    ).scalar_one_or_none()
    return int(loaded), seed


def _check_conflicts(conn: Connection, batch: pd.DataFrame, source: SourceData) -> pd.DataFrame:
    """Refuse a productid already loaded with another label; skip ones loaded with the same label."""
    ids = batch["productid"].tolist()
    existing: dict[int, int] = {}
    for chunk in range(0, len(ids), 5000):
        rows = conn.execute(
            select(Product.productid, Product.prdtypecode).where(
                Product.productid.in_(ids[chunk : chunk + 5000])
            )
        ).all()
        existing.update({int(pid): int(code) for pid, code in rows})
    if not existing:
        return batch
    known = batch["productid"].map(existing)
    clash = batch[known.notna() & (known != batch["prdtypecode"])]
    if not clash.empty:
        row = clash.iloc[0]
        raise DataValidationError(
            source.x_path,
            f"productid {row.productid} is already loaded with label {existing[int(row.productid)]} "
            f"but this file labels it {row.prdtypecode}",
            int(row.line),
        )
    return batch[known.isna()]


def _batch_checksum(batch: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for pid, code, des, desc in batch[["productid", "prdtypecode", "designation", "description"]].itertuples(
        index=False
    ):
        h.update(f"{pid}\x1f{code}\x1f{des}\x1f{desc}\x1e".encode())
    return h.hexdigest()


def _insert_products(conn: Connection, rows: pd.DataFrame) -> None:
    if rows.empty:
        return
    if conn.dialect.name == "postgresql":
        _copy_products(conn, rows)
        return
    conn.execute(insert(Product), rows.to_dict("records"))


def _copy_products(conn: Connection, rows: pd.DataFrame) -> None:
    """COPY FROM STDIN on Postgres: the rows stream as one CSV instead of one INSERT each."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    cols = list(PRODUCT_COLUMNS)
    for rec in rows[cols].itertuples(index=False):
        writer.writerow(["\\N" if (v is None or v is pd.NA) else v for v in rec])
    buf.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY products ({', '.join(cols)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)
    finally:
        cursor.close()


def load_next_batch(settings: Settings, source: Path, plan: LoadPlan) -> LoadResult:
    """Load the next slice of the local folder ``source`` into ``products``, all or nothing."""
    started = time.perf_counter()
    return load_source_data(settings, read_source(source), str(Path(source).resolve()), plan, started)


def load_source_data(
    settings: Settings, data: SourceData, source: str, plan: LoadPlan, started: float | None = None
) -> LoadResult:
    """Load the next slice of validated ``data`` (audited under the name ``source``), all or nothing."""
    started = time.perf_counter() if started is None else started
    upgrade(settings.database_url)
    engine = engine_for(settings.database_url)
    try:
        return _load_in_one_transaction(engine, data, source, plan, started)
    except Exception as exc:
        _record_failure(engine, data, source, exc)
        raise


def loaded_rows(settings: Settings, digest: str) -> int:
    """Rows of the source with this digest that are already loaded (0 when never loaded)."""
    upgrade(settings.database_url)
    with engine_for(settings.database_url).connect() as conn:
        return _loaded_rows(conn, digest)[0]


def _record_failure(engine, data: SourceData, source: str, exc: Exception) -> None:
    """Audit a batch that rolled back (its products were never committed)."""
    try:
        with engine.begin() as conn:
            now = datetime.now(UTC)
            conn.execute(
                insert(LoadBatch).values(
                    source=source,
                    source_digest=data.digest,
                    row_start=0,
                    row_end=0,
                    row_count=0,
                    order_seed=0,
                    source_rows=len(data.frame),
                    status="failed",
                    message=f"{exc.__class__.__name__}: {exc}"[:2000],
                    started_at=now,
                    finished_at=now,
                )
            )
    except Exception:  # the database itself is down: the original error is what the user needs
        pass


def _load_in_one_transaction(
    engine, data: SourceData, source: str, plan: LoadPlan, started: float
) -> LoadResult:
    total = len(data.frame)
    with engine.begin() as conn:
        _lock(conn)
        loaded, first_seed = _loaded_rows(conn, data.digest)
        seed = first_seed if first_seed is not None else plan.seed
        start, end = plan.next_slice(total, loaded)
        if end <= start:
            return LoadResult(source, None, 0, loaded, total, time.perf_counter() - started)
        order = loading_order(total, seed)
        batch = data.frame.iloc[order[start:end]].copy()
        batch = _check_conflicts(conn, batch, data)
        now = datetime.now(UTC)
        batch_id = conn.execute(
            insert(LoadBatch)
            .values(
                source=source,
                source_digest=data.digest,
                row_start=start,
                row_end=end,
                row_count=0,
                status="running",
                order_seed=seed,
                source_rows=total,
                started_at=now,
            )
            .returning(LoadBatch.id)
        ).scalar_one()
        batch["split"] = [split_for(p) for p in batch["productid"]]
        batch["batch_id"] = batch_id
        batch["source_row"] = batch["row_index"]
        batch["loaded_at"] = now
        batch["imageid"] = batch["imageid"].astype(object).where(batch["imageid"].notna(), None)
        rows = batch[list(PRODUCT_COLUMNS)]
        insert_started = time.perf_counter()
        _insert_products(conn, rows)
        insert_seconds = time.perf_counter() - insert_started
        skipped = (end - start) - len(rows)
        conn.execute(
            update(LoadBatch)
            .where(LoadBatch.id == batch_id)
            .values(
                status="succeeded",
                row_count=len(rows),
                checksum=_batch_checksum(rows),
                finished_at=datetime.now(UTC),
                message=f"skipped {skipped} products already loaded with the same label" if skipped else None,
            )
        )
    return LoadResult(source, batch_id, len(rows), end, total, time.perf_counter() - started, insert_seconds)
