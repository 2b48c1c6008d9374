"""Fixtures of the workflow tests: the rendered objects and a real MLflow server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
import yaml
from argo_support import RENDERED_DIR, VENV_BIN, free_port


@pytest.fixture(scope="session")
def rendered() -> dict[str, dict]:
    """The committed YAML files, parsed: file name -> object."""
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(RENDERED_DIR.glob("*.yaml"))}


@pytest.fixture(scope="session")
def rendered_objects(rendered: dict[str, dict]) -> list[dict]:
    return list(rendered.values())


# ---------------------------------------------------------------- a real MLflow server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow tracking + registry server on a free loopback port (SQLite store, proxied artifacts)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = shutil.which("mlflow", path=str(VENV_BIN)) or shutil.which("mlflow")
    assert mlflow, "mlflow is not installed in the venv"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            mlflow,
            "server",
            "--workers",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
    log.close()
