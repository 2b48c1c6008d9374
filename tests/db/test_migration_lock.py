"""Two `rakuten-mlops db upgrade` at once on one fresh Postgres database (two API pods starting)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support import temporary_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# The CLI with its imports done, released at the same instant as its twin: the race is the migration.
AT_THE_SAME_TIME = """
import os, sys, time
from pathlib import Path
from rakuten_mlops.cli import main
gate = Path(sys.argv[1])
(gate / f"ready-{os.getpid()}").touch()
while not (gate / "go").exists():
    time.sleep(0.002)
sys.argv = ["rakuten-mlops", "db", "upgrade"]
main()
"""
ROUNDS = 3


@pytest.fixture
def fresh_databases(pg_server: str):
    """A function that makes a new empty database; all are dropped afterwards."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(temporary_database(pg_server))


def test_two_concurrent_upgrades_both_succeed_and_leave_the_schema_at_head(fresh_databases, tmp_path: Path):
    from alembic.script import ScriptDirectory

    from rakuten_mlops.db.engine import MIGRATIONS_DIR
    from rakuten_mlops.db.models import Base

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()

    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MLFLOW_"))}
    for round_ in range(ROUNDS):
        url = fresh_databases()
        env = {**base, "RAKUTEN_HOME": str(tmp_path / f"home-{round_}"), "RAKUTEN_DATABASE_URL": url}
        gate = tmp_path / f"gate-{round_}"
        gate.mkdir()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", AT_THE_SAME_TIME, str(gate)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        while len(list(gate.glob("ready-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        (gate / "go").touch()
        outcomes = [(p.wait(timeout=120), *p.communicate()) for p in procs]
        for code, out, err in outcomes:
            assert code == 0 and "database schema is up to date" in out, f"round {round_}: {err}"
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
            tables = set(sa.inspect(conn).get_table_names())
        engine.dispose()
        assert set(Base.metadata.tables) <= tables
