"""Generation and loading rates: the generator against writing the same rows with pandas alone,
and the loader's COPY against SQLAlchemy's batched executemany on the same rows (Postgres)."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, insert

from benchmarks.common import best_of, print_table, throwaway_postgres
from rakuten_mlops.data.generator import generate_frame, write_official_layout
from rakuten_mlops.data.loader import LoadPlan, _copy_products, load_next_batch, split_for
from rakuten_mlops.db import engine_for, upgrade
from rakuten_mlops.db.models import LoadBatch, Product
from rakuten_mlops.settings import Settings

ROWS = 85_000  # the size of the official training set


def bench_generation(tmp: Path) -> None:
    frame = generate_frame(ROWS, seed=1)
    gen = best_of(lambda: write_official_layout(generate_frame(ROWS, seed=1), tmp / "gen"), repeat=2)
    write_only = best_of(lambda: write_official_layout(frame, tmp / "write"), repeat=2)
    print_table(
        ["what", "rows", "seconds", "rows/s", "ratio"],
        [
            [
                "generate + write CSV",
                ROWS,
                gen,
                ROWS / gen,
                f"{write_only / gen:.2f}x of pandas write-only speed",
            ],
            ["pandas to_csv only (peer)", ROWS, write_only, ROWS / write_only, "1.00x"],
        ],
    )
    print(f"target >= 50,000 rows/s: {'met' if ROWS / gen >= 50_000 else 'NOT met'}")


def _rows_for_insert(frame, batch_id: int):
    rows = frame.rename(columns={})[
        ["productid", "imageid", "designation", "description", "prdtypecode"]
    ].copy()
    rows["split"] = [split_for(p) for p in rows["productid"]]
    rows["batch_id"] = batch_id
    rows["source_row"] = range(len(rows))
    rows["loaded_at"] = datetime.now(UTC)
    return rows


def bench_loading(tmp: Path) -> None:
    frame = generate_frame(ROWS, seed=2)
    write_official_layout(frame, tmp / "load")
    results = []
    with throwaway_postgres() as pg:
        targets = [("sqlite", f"sqlite:///{tmp / 'bench.db'}")] + ([("postgres", pg)] if pg else [])
        for name, url in targets:
            settings = Settings(home=tmp / f"home-{name}", database_url=url)
            start = time.perf_counter()
            result = load_next_batch(settings, tmp / "load", LoadPlan(load_all=True))
            total = time.perf_counter() - start
            results.append(
                [
                    f"{name}: data load, whole command (read+validate+insert)",
                    result.rows,
                    total,
                    result.rows / total,
                    "",
                ]
            )
            results.append(
                [
                    f"{name}: data load, insert step",
                    result.rows,
                    result.insert_seconds,
                    result.rows / result.insert_seconds,
                    "",
                ]
            )
        if pg:
            upgrade(pg)
            engine = engine_for(pg)
            rows = _rows_for_insert(frame, 1)
            with engine.begin() as conn:
                conn.execute(delete(Product))
                conn.execute(
                    insert(LoadBatch).values(
                        id=10_000,
                        source="bench",
                        source_digest="x",
                        row_start=0,
                        row_end=0,
                        row_count=0,
                        order_seed=0,
                        source_rows=0,
                        status="succeeded",
                        started_at=datetime.now(UTC),
                    )
                )
            rows["batch_id"] = 10_000

            def copy():
                with engine.begin() as conn:
                    _copy_products(conn, rows)
                    conn.rollback()

            def executemany():
                with engine.begin() as conn:
                    conn.execute(insert(Product), rows.to_dict("records"))
                    conn.rollback()

            t_copy, t_many = best_of(copy, 2), best_of(executemany, 2)
            results.append(
                ["postgres: insert only, COPY (ours)", ROWS, t_copy, ROWS / t_copy, f"{t_many / t_copy:.1f}x"]
            )
            results.append(["postgres: insert only, executemany (peer)", ROWS, t_many, ROWS / t_many, "1.0x"])
    print_table(["what", "rows", "seconds", "rows/s", "ratio vs peer"], results)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench_generation(Path(tmp))
        bench_loading(Path(tmp))


if __name__ == "__main__":
    main()
