"""``POST /admin/retrain`` in kubernetes mode (``serving.retrain.ArgoRetrainer``): it submits the
``rakuten-train`` WorkflowTemplate and reads the run's status.

No Argo server runs here: the stand-in HTTP server answers like argo-server and records each request.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from rakuten_mlops.serving.retrain import ArgoRetrainer
from tests.support import free_port


def _argo_server(request: dict) -> tuple[int, dict]:
    """Answers like argo-server: a submit starts a run; a run's status is Succeeded unless missing."""
    if request["method"] == "POST":
        name = request["body"]["submitOptions"]["generateName"] + "x7k2p"
        return 200, {
            "metadata": {"name": name, "namespace": "rakuten", "creationTimestamp": "2026-11-22T10:00:00Z"}
        }
    if request["path"].endswith("/missing"):
        return 404, {"message": "not found"}
    return 200, {"metadata": {"name": request["path"].rsplit("/", 1)[1]}, "status": {"phase": "Succeeded"}}


@pytest.fixture
def argo_stub(stand_in_server):
    server = stand_in_server(_argo_server)
    return server.address, server.requests


def test_kubernetes_retrain_submits_the_workflow_template(settings, argo_stub, monkeypatch):
    address, recorded = argo_stub
    settings.argo_secure = False  # the argo CLI's ARGO_SECURE=false
    settings.retrain_mode = "kubernetes"
    settings.argo_server = address
    settings.argo_token = SecretStr("abc123")
    settings.namespace = "rakuten"
    retrainer = ArgoRetrainer(settings)
    job = retrainer.start()
    assert (
        job["id"] == "rakuten-train-api-x7k2p" and job["mode"] == "kubernetes" and job["status"] == "running"
    )
    sent = recorded[0]
    assert sent["path"] == "/api/v1/workflows/rakuten/submit"
    assert sent["auth"] == "Bearer abc123"
    assert sent["body"]["resourceKind"] == "WorkflowTemplate"
    assert sent["body"]["resourceName"] == "rakuten-train"
    assert retrainer.status(job["id"])["status"] == "succeeded"
    assert recorded[1]["path"] == "/api/v1/workflows/rakuten/rakuten-train-api-x7k2p"
    with pytest.raises(KeyError):
        retrainer.status("missing")


def test_kubernetes_retrain_reports_an_unreachable_argo_server(settings, monkeypatch):
    from rakuten_mlops.serving.errors import RetrainSubmissionError

    settings.argo_secure = False  # the argo CLI's ARGO_SECURE=false
    settings.argo_server = f"127.0.0.1:{free_port()}"
    with pytest.raises(RetrainSubmissionError, match="cannot reach the Argo server"):
        ArgoRetrainer(settings).start()
