"""The API contract campaign: schemathesis with every check against every operation, over real HTTP.

``rakuten-mlops serve`` with a real registered model, the admin and feedback tokens set (so the
admin, feedback and prediction routes are all mounted and exercised with the token), once with
the prediction fast path and once with FastAPI's routes (``RAKUTEN_SERVE_FAST_PATH=false``):
the same OpenAPI document must hold both ways. Schemathesis' phases (the schema's examples,
coverage of boundaries and type mutations, fuzzing, stateful sequences) send valid and
schema-violating requests; every check runs: a valid request accepted, a violating one refused,
documented status, content type, headers and body, auth not ignored, 405s with ``Allow``...

The Argo server behind ``POST /admin/retrain`` (kubernetes mode) is a stand-in HTTP server on
loopback that answers like argo-server; everything else is real.
"""

from __future__ import annotations

import uuid

import pytest

from tests.chaos.conftest import chaos_scale
from tests.serving.factories import ADMIN_TOKEN, ApiProcess, register_version
from tests.serving.schemathesis_run import run_contract

pytestmark = [pytest.mark.chaos, pytest.mark.long, pytest.mark.slow]

MAX_EXAMPLES = 50  # generated cases per operation and phase at RAKUTEN_CHAOS_SCALE=1


def _argo(submitted: set[str]):
    """Answers like argo-server: a submit starts a run, known runs are Running, others 404."""

    def respond(request: dict) -> tuple[int, dict]:
        if request["method"] == "POST" and request["path"].endswith("/submit"):
            name = f"rakuten-train-api-{uuid.uuid4().hex[:5]}"
            submitted.add(name)
            return 200, {
                "metadata": {"name": name, "creationTimestamp": "2026-12-06T10:00:00Z"},
                "status": {"phase": "Running"},
            }
        name = request["path"].rsplit("/", 1)[-1]
        if request["method"] == "GET" and name in submitted:
            return 200, {"metadata": {"name": name}, "status": {"phase": "Running"}}
        return 404, {"message": "not found"}

    return respond


@pytest.fixture(scope="module")
def contract_model(mlflow_server):
    """A registered model with two versions (production: the second, so a rollback has a target)."""
    name = f"rakuten_classifier_{uuid.uuid4().hex[:8]}"
    register_version(mlflow_server.uri, name, variant=0)
    register_version(mlflow_server.uri, name, variant=1)
    return name


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "fastapi-routes"])
def test_every_operation_meets_every_check(
    fast_path, contract_model, mlflow_server, stand_in_server, tmp_path, chaos_figures
):
    argo = stand_in_server(_argo(set()))
    api = ApiProcess(
        {
            "RAKUTEN_HOME": str(tmp_path / "home"),
            "RAKUTEN_DATABASE_URL": f"sqlite:///{tmp_path / 'data.db'}",
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
            "RAKUTEN_REGISTERED_MODEL": contract_model,
            "RAKUTEN_MODEL_POLL_SECONDS": "0",
            "RAKUTEN_ADMIN_TOKEN": ADMIN_TOKEN,
            "RAKUTEN_SERVE_FAST_PATH": str(fast_path).lower(),
            "RAKUTEN_RETRAIN_MODE": "kubernetes",
            "ARGO_SERVER": argo.address,
            "ARGO_SECURE": "false",
        },
        tmp_path / "api.log",
    ).start()
    try:
        operations = len([(m, p) for p, methods in _openapi(api.url)["paths"].items() for m in methods])
        run = run_contract(
            api.url, tmp_path / "schemathesis", max_examples=max(5, round(MAX_EXAMPLES * chaos_scale())),
            token=ADMIN_TOKEN, timeout=1800,
        )  # fmt: skip
    finally:
        api.terminate()

    failures = sum(run.failed_checks.values())
    chaos_figures.record("operations tested", f"{run.operations_tested} of {operations}", goal="all",
                         met=run.operations_tested == operations)  # fmt: skip
    chaos_figures.record("requests generated (valid / schema-violating)",
                         f"{run.cases_generated} ({run.modes['positive']} / {run.modes['negative']})")  # fmt: skip
    chaos_figures.record("checks run (kinds of check)", f"{run.checks_run} ({len(run.checks)})")
    chaos_figures.record("failed checks", failures, goal="0", met=failures == 0)
    assert run.failures == [], "\n".join(run.failures)
    assert run.exit_code == 0, run.output[-5000:]
    assert run.operations_tested == operations == 11
    assert {"positive_data_acceptance", "negative_data_rejection", "response_schema_conformance",
            "status_code_conformance", "content_type_conformance", "ignored_auth"} <= set(run.checks)  # fmt: skip
    assert argo.requests, "POST /admin/retrain never reached the Argo stand-in"


def _openapi(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/openapi.json", timeout=30).json()
