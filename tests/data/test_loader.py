"""Incremental loading on SQLite and on a real Postgres: slices, idempotency, crash safety, conflicts."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from rakuten_mlops.data import loader
from rakuten_mlops.data.generator import generate_frame, write_official_layout
from rakuten_mlops.data.loader import LoadPlan, load_next_batch, split_for
from rakuten_mlops.db import engine_for, upgrade
from rakuten_mlops.db.models import LoadBatch, Product
from rakuten_mlops.errors import DataValidationError
from rakuten_mlops.settings import Settings


@pytest.fixture
def db_settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=db_url)


def _count(url: str) -> int:
    upgrade(url)
    with engine_for(url).connect() as conn:
        return conn.execute(select(func.count()).select_from(Product)).scalar_one()


def _batches(url: str) -> list:
    with engine_for(url).connect() as conn:
        return conn.execute(select(LoadBatch).order_by(LoadBatch.id)).all()


def test_first_run_loads_40_percent_then_slices_until_done(db_settings: Settings, generated_source: Path):
    url = db_settings.database_url
    first = load_next_batch(db_settings, generated_source, LoadPlan())
    assert (first.rows, first.loaded, first.total) == (1200, 1200, 3000)
    second = load_next_batch(db_settings, generated_source, LoadPlan(batch_fraction=0.03))
    assert second.rows == 90 and _count(url) == 1290
    third = load_next_batch(db_settings, generated_source, LoadPlan(batch_rows=1000))
    assert third.rows == 1000
    rest = load_next_batch(db_settings, generated_source, LoadPlan(batch_rows=5000))
    assert rest.rows == 710 and rest.loaded_share == 1.0
    again = load_next_batch(db_settings, generated_source, LoadPlan())
    assert again.batch_id is None and again.rows == 0
    assert "nothing to load" in again.describe()
    assert _count(url) == 3000
    audit = _batches(url)
    assert [b.status for b in audit] == ["succeeded"] * 4
    assert [b.row_count for b in audit] == [1200, 90, 1000, 710]
    assert all(b.checksum and b.finished_at for b in audit)


def test_split_is_a_stable_function_of_productid(db_settings: Settings, generated_source: Path):
    load_next_batch(db_settings, generated_source, LoadPlan(load_all=True))
    with engine_for(db_settings.database_url).connect() as conn:
        rows = conn.execute(select(Product.productid, Product.split)).all()
    assert all(split == split_for(pid) for pid, split in rows)
    test_share = sum(split == "test" for _, split in rows) / len(rows)
    assert 0.17 < test_share < 0.23


def test_a_crash_mid_batch_leaves_no_rows_and_the_next_run_redoes_it(
    db_settings: Settings, generated_source: Path, monkeypatch: pytest.MonkeyPatch
):
    url = db_settings.database_url
    real_insert = loader._insert_products

    def insert_then_crash(conn, rows):
        real_insert(conn, rows)  # the rows are written inside the transaction...
        raise RuntimeError("worker killed mid-batch")  # ...and the process dies before the commit

    monkeypatch.setattr(loader, "_insert_products", insert_then_crash)
    with pytest.raises(RuntimeError, match="mid-batch"):
        load_next_batch(db_settings, generated_source, LoadPlan())
    assert _count(url) == 0
    assert [b.status for b in _batches(url)] == ["failed"]
    monkeypatch.setattr(loader, "_insert_products", real_insert)
    redo = load_next_batch(db_settings, generated_source, LoadPlan())
    assert (redo.rows, redo.loaded) == (1200, 1200)
    assert _count(url) == 1200


def test_concurrent_loaders_never_load_a_row_twice(db_settings: Settings, generated_source: Path):
    load_next_batch(db_settings, generated_source, LoadPlan())
    errors: list[Exception] = []

    def worker():
        try:
            for _ in range(3):
                load_next_batch(db_settings, generated_source, LoadPlan(batch_rows=150))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _count(db_settings.database_url) == 1200 + 6 * 150
    ranges = [(b.row_start, b.row_end) for b in _batches(db_settings.database_url)]
    assert all(prev[1] == nxt[0] for prev, nxt in zip(ranges, ranges[1:], strict=False))


def test_a_product_relabelled_by_another_source_is_refused(db_settings: Settings, tmp_path: Path):
    frame = generate_frame(200, seed=21)
    write_official_layout(frame, tmp_path / "a")
    load_next_batch(db_settings, tmp_path / "a", LoadPlan(load_all=True))
    relabelled = frame.copy()
    relabelled.loc[5, "prdtypecode"] = 2583 if frame.loc[5, "prdtypecode"] != 2583 else 10
    relabelled.loc[:, "designation"] = relabelled["designation"] + " v2"  # another file, same products
    write_official_layout(relabelled, tmp_path / "b")
    with pytest.raises(DataValidationError, match=f"productid {frame.loc[5, 'productid']} is already loaded"):
        load_next_batch(db_settings, tmp_path / "b", LoadPlan(load_all=True))
    assert _count(db_settings.database_url) == 200


def test_bad_files_load_nothing(db_settings: Settings, tmp_path: Path):
    frame = generate_frame(50, seed=2)
    write_official_layout(frame, tmp_path)
    y = tmp_path / "Y_train_CVw08PX.csv"
    y.write_text(y.read_text().replace(f"\n7,{frame.loc[7, 'prdtypecode']}\n", "\n7,31337\n"))
    with pytest.raises(DataValidationError, match="line 9: unknown prdtypecode 31337"):
        load_next_batch(db_settings, tmp_path, LoadPlan())
    assert _count(db_settings.database_url) == 0
