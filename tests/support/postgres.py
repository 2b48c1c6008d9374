"""The real Postgres the tests use, and throwaway databases on it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

PG_ADMIN_URL = os.environ.get(
    "RAKUTEN_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def postgres_unavailable(admin_url: str = PG_ADMIN_URL) -> str | None:
    """None when a Postgres server answers, else the reason it does not."""
    import sqlalchemy as sa

    try:
        with sa.create_engine(admin_url).connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        return f"no PostgreSQL at {admin_url}: {exc.__class__.__name__}"
    return None


@contextlib.contextmanager
def temporary_database(admin_url: str, prefix: str = "rk_test") -> Iterator[str]:
    """A new database on the server of ``admin_url``; dropped (connections closed) on exit."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from rakuten_mlops.db.engine import engine_for

        engine_for(url).dispose()
        engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def postgres_binaries() -> Path | None:
    """The directory of Debian's server binaries (initdb, pg_ctl), the newest version installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


class PrivatePostgres:
    """A Postgres server of one test (initdb in a directory of its own, on a free port), so a
    scenario can stop and start it with ``pg_ctl`` without touching the machine's shared server.

    Under root the server runs as the ``postgres`` user (initdb refuses root); trust
    authentication on 127.0.0.1 only, as the shared test server. ``close()`` stops it and
    removes its directory.
    """

    def __init__(self, bindir: Path | None = None, *, port: int | None = None):
        from tests.support.processes import free_port

        self.bindir = bindir or postgres_binaries()
        if self.bindir is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.port = port or free_port()
        # not under pytest's 0700 tmp dirs: the server's user must reach its data directory
        self.root = Path(tempfile.mkdtemp(prefix="rakuten-private-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.run_as = "postgres" if os.geteuid() == 0 else None
        if self.run_as:
            shutil.chown(self.root, self.run_as)
        self.admin_url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> str:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr}\n{self.log_tail()}"
            )
        return done.stdout

    def start(self) -> PrivatePostgres:
        """initdb on first use, then ``pg_ctl start`` (waits until it accepts connections)."""
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
            )
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start"
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: fast closes the clients' connections (a database going away)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
