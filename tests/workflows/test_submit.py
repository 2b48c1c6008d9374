"""``python -m workflows submit NAME`` speaks Argo server's submit API.

No Argo server runs here: a loopback HTTP server records what the command sends and answers
like argo-server's ``POST /api/v1/workflows/{namespace}/submit`` does.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from workflows.submit import SubmitError, submit

from tests.support import REPO


def argo_submit_api(request: dict) -> tuple[int, dict]:
    """Answers like argo-server: nothing installed yet; creates echo the object; submits start a run."""
    body = request["body"]
    if request["method"] == "GET":
        return 404, {"code": 5, "message": "not found"}
    if "/submit" not in request["path"]:  # create of a WorkflowTemplate / CronWorkflow: echo it back
        return 200, body.get("template") or body.get("cronWorkflow")
    if body.get("resourceName") == "missing":
        return 404, {"code": 5, "message": 'workflowtemplates.argoproj.io "missing" not found'}
    name = body["submitOptions"]["generateName"] + "abcde"
    return 200, {"metadata": {"name": name, "namespace": body["namespace"]}, "spec": {}}


@pytest.fixture
def argo_api(stand_in_server):
    server = stand_in_server(argo_submit_api)
    return server.url, server.requests


def test_submit_starts_a_run_from_the_installed_template_with_parameters(argo_api):
    url, received = argo_api
    name = submit("rakuten-train", {"model": "logreg"}, server=url, token="s3cr3t", namespace="ml")
    assert name == "rakuten-train-abcde"
    (request,) = received
    assert request["path"] == "/api/v1/workflows/ml/submit"
    assert request["auth"] == "Bearer s3cr3t"
    assert request["body"]["resourceKind"] == "WorkflowTemplate"
    assert request["body"]["resourceName"] == "rakuten-train"
    assert request["body"]["submitOptions"]["parameters"] == ["model=logreg"]


def test_submit_from_the_command_line_reads_argo_server_and_token_from_env(argo_api):
    url, received = argo_api
    done = subprocess.run(
        [sys.executable, "-m", "workflows", "submit", "drift-check", "-p", "window=1d"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "ARGO_SERVER": url, "ARGO_TOKEN": "Bearer t0k"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "submitted drift-check-abcde" in done.stdout
    assert received[0]["body"]["resourceKind"] == "CronWorkflow"
    assert received[0]["path"] == "/api/v1/workflows/rakuten/submit"
    assert received[0]["auth"] == "Bearer t0k"


def test_submit_explains_what_is_missing():
    with pytest.raises(SubmitError, match="unknown workflow 'trian'"):
        submit("trian", server="http://127.0.0.1:1")
    with pytest.raises(SubmitError, match="set ARGO_SERVER"):
        submit("rakuten-train", server="")


def test_a_refusal_from_the_server_is_reported(argo_api, monkeypatch):
    url, _ = argo_api
    from workflows import submit as submit_module

    monkeypatch.setattr(submit_module, "objects_by_name", lambda: {"missing": _Named("missing")})
    with pytest.raises(SubmitError, match="refused"):
        submit("missing", server=url)


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def to_dict(self) -> dict:
        return {"kind": "WorkflowTemplate", "metadata": {"name": self.name}}


def test_apply_creates_the_object_from_code_before_submitting(argo_api):
    url, received = argo_api
    assert submit("rakuten-train", server=url, namespace="ml", apply=True) == "rakuten-train-abcde"
    get, create, run = received
    assert get["path"] == "/api/v1/workflow-templates/ml/rakuten-train"
    assert create["path"] == "/api/v1/workflow-templates/ml"
    template = create["body"]["template"]
    assert template["metadata"] == {**template["metadata"], "name": "rakuten-train", "namespace": "ml"}
    assert template["spec"]["entrypoint"] == "train-and-promote"
    assert run["path"] == "/api/v1/workflows/ml/submit"
