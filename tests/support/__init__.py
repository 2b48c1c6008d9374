"""The test harness shared by every test folder: ports, polling, managed processes, real servers
(MLflow, SeaweedFS S3, Postgres databases) and one stand-in HTTP server. Fixtures live in
``tests.support.plugin``, loaded by tests/conftest.py."""

from tests.support.mlflow_server import MlflowServer
from tests.support.paths import REPO, SAMPLE_DIR, SHARED
from tests.support.postgres import PG_ADMIN_URL, temporary_database
from tests.support.processes import (
    CLI,
    VENV_BIN,
    ManagedProcess,
    free_port,
    free_ports,
    wait_http,
    wait_until,
)
from tests.support.seaweedfs import S3Server
from tests.support.standin_http import RecordedRequest, StandInHttpServer

__all__ = [
    "CLI",
    "PG_ADMIN_URL",
    "VENV_BIN",
    "ManagedProcess",
    "MlflowServer",
    "REPO",
    "RecordedRequest",
    "S3Server",
    "SAMPLE_DIR",
    "SHARED",
    "StandInHttpServer",
    "free_port",
    "free_ports",
    "temporary_database",
    "wait_http",
    "wait_until",
]
