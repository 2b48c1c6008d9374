"""Argo from the control room: the health check and "submit now" of the installed workflows.

No Argo server runs on this machine, so a loopback HTTP server that answers like the Argo
server's REST API (``/api/v1/version``, ``/api/v1/workflows/{ns}/submit``) records what the
control room sends; the real requests, the real app.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ui_helpers import health_line, main_text, open_app, type_token


class ArgoStandIn(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/api/v1/version":
            self._send(200, {"version": "v3.7.1"})
        else:
            self._send(404, {"message": "not found"})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        name = body["submitOptions"]["generateName"] + "x7k2p"
        self._send(200, {"metadata": {"name": name, "namespace": body["namespace"]}, "status": {}})

    def log_message(self, *args):
        pass


@pytest.fixture
def argo_server(ui_env, monkeypatch):
    from rakuten_mlops.settings import get_settings

    ArgoStandIn.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ArgoStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ARGO_SERVER", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("ARGO_TOKEN", "argo-sa-token-1")
    monkeypatch.setenv("RAKUTEN_NAMESPACE", "rakuten-prod")
    get_settings.cache_clear()
    yield ArgoStandIn.requests
    server.shutdown()
    server.server_close()


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
