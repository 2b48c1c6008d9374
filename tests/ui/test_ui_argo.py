"""Argo from the control room: the health check and "submit now" of the installed workflows.

No Argo server runs on this machine, so a loopback HTTP server that answers like the Argo
server's REST API (``/api/v1/version``, ``/api/v1/workflows/{ns}/submit``) records what the
control room sends; the real requests, the real app.
"""

from __future__ import annotations

import pytest

from tests.ui.apptest import health_line, main_text, open_app, type_token


def argo_server_api(request: dict) -> tuple[int, dict]:
    """Answers like the Argo server: its version, and a submitted run's name."""
    if request["method"] == "GET":
        return (
            (200, {"version": "v3.7.1"})
            if request["path"] == "/api/v1/version"
            else (404, {"message": "not found"})
        )
    body = request["body"]
    name = body["submitOptions"]["generateName"] + "x7k2p"
    return 200, {"metadata": {"name": name, "namespace": body["namespace"]}, "status": {}}


@pytest.fixture
def argo_server(ui_env, monkeypatch, stand_in_server):
    """The submits the control room sends to a stand-in Argo server (health checks not recorded)."""
    from rakuten_mlops.settings import get_settings

    server = stand_in_server(argo_server_api, record=lambda r: r["method"] == "POST")
    monkeypatch.setenv("ARGO_SERVER", server.url)
    monkeypatch.setenv("ARGO_TOKEN", "argo-sa-token-1")
    monkeypatch.setenv("RAKUTEN_NAMESPACE", "rakuten-prod")
    get_settings.cache_clear()
    yield server.requests


def test_argo_health_names_the_server_version(argo_server):
    state, reason = health_line(open_app(), "Argo")
    assert (state, reason.split(" · ")[0]) == ("ok", "Argo server v3.7.1")


def test_submit_incremental_load_starts_the_cron_workflow_now(argo_server):
    at = type_token(open_app("data"))
    at.button(key="submit_load_workflow").click().run()
    assert not at.exception
    assert (
        "submitted CronWorkflow incremental-load: Workflow incremental-load-ui-x7k2p (Pending) "
        "in namespace rakuten-prod" in main_text(at)
    )
    [request] = argo_server
    assert request["path"] == "/api/v1/workflows/rakuten-prod/submit"
    assert request["auth"] == "Bearer argo-sa-token-1"
    assert request["body"]["resourceKind"] == "CronWorkflow"
    assert request["body"]["resourceName"] == "incremental-load"


def test_run_a_drift_check_now_submits_drift_check(argo_server):
    at = type_token(open_app("monitoring"))
    at.button(key="submit_drift_workflow").click().run()
    assert "Workflow drift-check-ui-x7k2p (Pending)" in main_text(at)
    assert argo_server[0]["body"]["resourceName"] == "drift-check"


def test_workflow_buttons_are_locked_without_token_and_absent_without_argo(argo_server, monkeypatch):
    from rakuten_mlops.settings import get_settings

    monkeypatch.delenv("RAKUTEN_ADMIN_TOKEN")
    get_settings.cache_clear()
    assert open_app("data").button(key="submit_load_workflow").disabled
    monkeypatch.delenv("ARGO_SERVER")
    get_settings.cache_clear()
    at = open_app("data")
    assert "submit_load_workflow" not in [b.key for b in at.button]
    assert argo_server == []
