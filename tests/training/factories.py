"""Test objects of the training tests: products in the data database, generated and noisy frames,
the CLI run in-process, the model_events rows."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest


def insert_products(
    db_url: str, frame: pd.DataFrame, *, split: str | None = None, source: str = "tests"
) -> int:
    """Insert ``frame`` (generator columns) as one load batch; ``split`` forces every row's side,
    else the loader's stable productid hash decides. Returns the batch id."""
    from rakuten_mlops.data.loader import split_for
    from rakuten_mlops.db import session_scope, upgrade
    from rakuten_mlops.db.models import LoadBatch, Product

    upgrade(db_url)
    with session_scope(db_url) as session:
        batch = LoadBatch(
            source=source, source_digest="0" * 64, row_start=0, row_end=len(frame), row_count=len(frame),
            status="succeeded",
        )  # fmt: skip
        session.add(batch)
        session.flush()
        session.add_all(
            Product(
                productid=int(r.productid),
                imageid=int(r.imageid),
                designation=r.designation,
                description=r.description,
                prdtypecode=int(r.prdtypecode),
                split=split or split_for(int(r.productid)),
                batch_id=batch.id,
                source_row=i,
            )  # fmt: skip
            for i, r in enumerate(frame.itertuples(index=False))
        )
        return batch.id


def generated(rows: int, seed: int) -> pd.DataFrame:
    from rakuten_mlops.data.generator import generate_frame

    return generate_frame(rows, seed, first_productid=1_000_000 * (seed + 1))


def noisy_labels(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same products with labels drawn at random: a bad batch that makes a worse model."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["prdtypecode"] = rng.choice(np.unique(frame["prdtypecode"]), size=len(frame))
    return out


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> CliResult:
    """``rakuten-mlops ARGS`` through the console-script entry point (domain errors -> exit codes)."""
    from rakuten_mlops.cli import main
    from rakuten_mlops.settings import get_settings

    get_settings.cache_clear()
    monkeypatch.setattr(sys, "argv", ["rakuten-mlops", *args])
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    get_settings.cache_clear()
    return CliResult(code, captured.out, captured.err)


def model_events(db_url: str) -> list[dict]:
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import ModelEvent

    with engine_for(db_url).connect() as conn:
        return [
            dict(r) for r in conn.execute(select(ModelEvent.__table__).order_by(ModelEvent.id)).mappings()
        ]
