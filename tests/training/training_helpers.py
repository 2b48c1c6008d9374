"""Helpers of the training tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from support.seaweedfs import BUCKET, S3_KEY, S3_SECRET, S3Server  # noqa: F401 - re-exported

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {log.read_text()[-2000:]}")


def stop_process(proc: subprocess.Popen, grace: float = 8.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class MlflowServer:
    url: str
    s3: S3Server
