"""Small helpers shared by the benchmarks: timing, tables and a throwaway Postgres database."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best wall time of `repeat` runs (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers] + [[f"{c:,.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process of this host has used, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session_cpu(session: int) -> float:
    """CPU seconds of the live processes of a session (a server started with
    ``start_new_session``: its id is the leader's pid), from /proc."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str | None]:
    """URL of a fresh Postgres database, or None when no server answers."""
    import sqlalchemy as sa

    name = f"rk_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        print(f"(no Postgres: {exc.__class__.__name__}; Postgres rows skipped)")
        yield None
        return
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        from rakuten_mlops.db.engine import engine_for

        engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
