"""Schemathesis against the running API's own OpenAPI schema: no generated request gets a 5xx.

Valid (positive) and schema-violating (negative) requests for every operation, bounded in count.
"""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 15


def test_no_generated_request_gets_a_5xx(shared_api):
    schema = schemathesis.openapi.from_url(f"{shared_api.url}/openapi.json")
    server_errors: list[str] = []
    checked = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation, mode in itertools.product(operations, schemathesis.GenerationMode):

        @settings(
            max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case) -> None:
            response = case.call(base_url=shared_api.url, timeout=30)
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
                )

        try:
            call()
        except Unsatisfiable:  # nothing to break in an operation without inputs (negative mode)
            continue
        checked.append(f"{mode.value} {operation.method.upper()} {operation.path}")
    assert {
        "positive POST /predict",
        "negative POST /predict",
        "negative POST /predict/batch",
        "positive GET /model",
    } <= set(checked)
    assert server_errors == []
