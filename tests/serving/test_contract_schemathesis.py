"""The prediction routes keep their OpenAPI contract: schemathesis, every check, over real HTTP.

Valid requests are accepted, schema-violating ones refused with a documented 4xx, and every
answer has a documented status, content type and body. The short run of ``make test``: the
shared API (fast path on), ``POST /predict`` and ``POST /predict/batch``, the schema's examples
and the coverage phase (boundaries and type mutations of every field and parameter).
``tests/chaos/test_contract.py`` runs the whole campaign (all 11 operations with the admin
token, fuzzing and stateful phases, fast path on and off, more cases).
"""

from __future__ import annotations

import pytest

from tests.serving.schemathesis_run import run_contract

pytestmark = pytest.mark.slow


def test_generated_requests_meet_every_check(shared_api, tmp_path):
    run = run_contract(
        shared_api.url,
        tmp_path,
        max_examples=5,
        phases="examples,coverage",
        include_paths=("/predict", "/predict/batch"),
    )
    assert run.failures == [], "\n".join(run.failures)
    assert run.exit_code == 0, run.output[-3000:]
    assert run.operations_tested == 2
    # both kinds of generated request were sent, and the acceptance and refusal checks ran on them
    assert run.modes["positive"] > 0 and run.modes["negative"] > 0
    assert run.checks["positive_data_acceptance"] > 0 and run.checks["negative_data_rejection"] > 0
    assert run.checks["response_schema_conformance"] > 0 and run.checks["status_code_conformance"] > 0
