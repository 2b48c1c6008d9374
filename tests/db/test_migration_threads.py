"""Our data-database migration and MLflow's store creation, in two threads of one process.

Alembic's ``context`` and ``op`` are process-global proxies: the prediction log's writer thread
migrating the data database while the API opens the embedded MLflow store (a SQLite store, whose
creation runs MLflow's own alembic upgrade) must not read each other's migration. Real SQLite
files and MLflow's own SQL stores, made through :func:`rakuten_mlops.registry.connect`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MLFLOW_STORES = 1  # a fresh MLflow store created while our migrations run in a loop
DEADLINE_SECONDS = 300


def test_our_migrations_and_mlflow_store_creation_do_not_collide(tmp_path: Path, monkeypatch):
    from rakuten_mlops.db import upgrade
    from rakuten_mlops.registry import connect
    from rakuten_mlops.settings import Settings

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # connect() sets it: restored after
    errors: list[str] = []
    done = {"ours": 0, "mlflow": 0}
    stop = threading.Event()

    def ours() -> None:
        while not stop.is_set():
            try:
                upgrade(f"sqlite:///{tmp_path / 'data'}-{done['ours']}.db")
            except Exception as exc:
                errors.append(f"our migration: {exc!r}")
                stop.set()
            done["ours"] += 1

    def mlflow_stores() -> None:
        while not stop.is_set() and done["mlflow"] < MLFLOW_STORES:
            home = tmp_path / f"home-{done['mlflow']}"
            settings = Settings(
                home=home,
                database_url=f"sqlite:///{tmp_path / 'unused.db'}",
                mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            )
            try:
                connect(settings).search_registered_models()  # the tracking and the registry store
            except Exception as exc:
                errors.append(f"MLflow store creation: {exc!r}")
                stop.set()
            done["mlflow"] += 1
        stop.set()

    threads = [threading.Thread(target=ours), threading.Thread(target=mlflow_stores)]
    for thread in threads:
        thread.start()
    stop.wait(DEADLINE_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(DEADLINE_SECONDS)
    assert errors == []
    assert done["mlflow"] == MLFLOW_STORES and done["ours"] >= 2, done  # both sides really ran
