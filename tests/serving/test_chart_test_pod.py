"""The chart's `helm test` pod script, run against the real API over HTTP (a real MLflow server):
on a fresh install it passes because /ready is 200 and /predict answers 503; once a version is
in production it classifies a product."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest

from tests.serving.factories import RegisteredModel, register_version
from tests.support import REPO, wait_http

pytestmark = pytest.mark.slow

TEST_POD = REPO / "charts" / "rakuten-mlops" / "templates" / "tests" / "predict-test.yaml"


def pod_script(api_url: str) -> str:
    """The Python the test pod runs (its `args` block scalar), pointed at api_url."""
    text = TEST_POD.read_text()
    block = text.split("      args:\n        - |\n", 1)[1].split("\n      securityContext:", 1)[0]
    script = "\n".join(line[10:] for line in block.splitlines())
    script, count = re.subn(r"http://\{\{ \$api \}\}:8000", api_url, script)
    assert count == 1 and "{{" not in script, script
    return script


def run_pod(api_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", pod_script(api_url)], capture_output=True, text=True, timeout=120
    )


def test_helm_test_passes_on_a_fresh_install_then_classifies(
    mlflow_server, fitted_pipelines, tmp_path, start_api
):
    model = RegisteredModel(f"rakuten_helmtest_{uuid.uuid4().hex[:8]}", mlflow_server.uri, ("", ""))
    api = start_api(model, f"sqlite:///{tmp_path / 'data.db'}")
    fresh = run_pod(api.url)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "OK: no production model yet" in fresh.stdout and "503" in fresh.stdout

    version = register_version(mlflow_server.uri, model.name, pipeline=fitted_pipelines[0])
    wait_http(f"{api.url}/ready", 30, ok=lambda r: r.json()["model_version"] == version)
    served = run_pod(api.url)
    assert served.returncode == 0, served.stdout + served.stderr
    assert f"by model version {version}" in served.stdout
