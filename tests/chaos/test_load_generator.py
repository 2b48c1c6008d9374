"""The load generator of the campaign (``tests.support.load``) counts what a user would count as
failed: an error status and a server that does not answer. Its zeros in the scenarios mean
something only if it does. The server here is the harness's stand-in HTTP server on loopback."""

from __future__ import annotations

import pytest

from tests.support import free_port
from tests.support.load import LoadPlan, start_load


@pytest.mark.chaos
def test_the_generator_counts_error_statuses_and_reads_the_bodies(stand_in_server, tmp_path):
    def respond(request):
        if request["body"]["fail"]:
            return 500, {"detail": "broken"}
        return 200, {"model_version": "7", "prediction_id": f"id-{request['body']['n']}"}

    server = stand_in_server(respond)
    bodies = [f'{{"n": {n}, "fail": {"true" if n == 3 else "false"}}}' for n in range(5)]
    result = start_load(LoadPlan(f"{server.url}/predict", bodies, rate=100, seconds=1), tmp_path).result()

    whole = result.window()
    assert whole.requests == 100
    assert whole.failed == 20 and whole.statuses == {200: 80, 500: 20}
    assert result.returned_ids() == {"id-0", "id-1", "id-2", "id-4"}
    assert {v for versions in result.versions for v in versions} == {"7"}
    assert result.window(0.5).requests == 50  # requests are due at a constant rate
    assert all(d >= s for d, s in zip(result.done, result.sent, strict=True))


@pytest.mark.chaos
def test_the_generator_counts_a_server_that_is_not_there(tmp_path):
    plan = LoadPlan(f"http://127.0.0.1:{free_port()}/predict", ['{"n": 0}'], rate=50, seconds=1)
    result = start_load(plan, tmp_path).result()

    assert result.window().failed == 50
    assert "ConnectionRefusedError" in result.failures()[0]
