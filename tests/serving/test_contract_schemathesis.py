"""The API keeps its OpenAPI contract: schemathesis, every check, over real HTTP.

Valid requests are accepted, schema-violating ones refused with a documented 4xx (never a 5xx),
and every answer has a documented status, content type and body. The short run of ``make test``:
the shared API (fast path on, no admin token: the routes it mounts), every operation of its
schema, the schema's examples and the coverage phase (boundaries and type mutations of every
field and parameter). ``tests/chaos/test_contract.py`` runs the whole campaign (all 11
operations with the admin token, fuzzing and stateful phases, fast path on and off, more cases).
"""

from __future__ import annotations

import httpx
import pytest

from tests.serving.schemathesis_run import run_contract

pytestmark = pytest.mark.slow


def test_generated_requests_meet_every_check(shared_api, tmp_path):
    schema = httpx.get(f"{shared_api.url}/openapi.json", timeout=30).json()
    operations = {
        f"{method.upper()} {path}" for path, methods in schema["paths"].items() for method in methods
    }
    run = run_contract(shared_api.url, tmp_path, max_examples=5, phases="examples,coverage")
    assert run.failures == [], "\n".join(run.failures)
    assert run.exit_code == 0, run.output[-3000:]
    assert run.operations_tested == len(operations) and operations <= {op for _mode, op in run.sent}
    # valid and schema-violating requests were sent, and the acceptance and refusal checks ran on them
    assert {
        ("positive", "POST /predict"),
        ("negative", "POST /predict"),
        ("positive", "POST /predict/batch"),
        ("negative", "POST /predict/batch"),
        ("positive", "GET /model"),
    } <= set(run.sent)
    assert run.checks["positive_data_acceptance"] > 0 and run.checks["negative_data_rejection"] > 0
    assert run.checks["not_a_server_error"] == sum(run.sent.values())
    assert run.checks["response_schema_conformance"] > 0 and run.checks["status_code_conformance"] > 0
