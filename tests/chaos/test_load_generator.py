"""The load generator of the campaign (``tests.support.load``) counts what a user would count as
failed: an error status and a server that does not answer. Its zeros in the scenarios mean
something only if it does. The server here is the harness's stand-in HTTP server on loopback."""

from __future__ import annotations

import time

import pytest

from tests.support import StandInHttpServer, free_port
from tests.support.load import TICK_SECONDS, LoadPlan, generator_capacity, start_load


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


@pytest.mark.chaos
def test_the_generators_scheduler_does_not_spin_between_due_times(tmp_path):
    """At 5,000 requests/s the due times are 0.2 ms apart, under an event loop's millisecond
    timers: the scheduler wakes about once per ``TICK_SECONDS`` and sends what is due, instead of
    spinning through loop iterations that each find nothing due (the CPU that capped the rate the
    campaign could send). The requests go to a port nobody listens on: only the schedule counts."""
    seconds = 1.0
    plan = LoadPlan(f"http://127.0.0.1:{free_port()}/predict", ['{"n": 0}'], rate=5000, seconds=seconds)
    result = start_load(plan, tmp_path).result()

    assert result.window().requests == 5000
    assert result.wakeups <= 1.2 * seconds / TICK_SECONDS
    assert result.window(0.5).requests == 2500  # still due at a constant rate


@pytest.mark.chaos
def test_the_generator_runs_without_cyclic_garbage_collection(tmp_path):
    """The generator keeps a record of every request; the cyclic collector's full passes over
    them grow with the run and hold the event loop, releasing the requests due meanwhile as one
    burst. It runs with the collector off: no pass during a run of 5,000 requests."""
    plan = LoadPlan(f"http://127.0.0.1:{free_port()}/predict", ['{"n": 0}'], rate=5000, seconds=1.0)
    result = start_load(plan, tmp_path).result()

    assert result.window().requests == 5000
    assert result.gc_collections == 0


@pytest.mark.chaos
def test_the_generator_retries_after_retry_after_and_counts_a_client_that_gives_up(tmp_path):
    """A 503 with ``Retry-After`` is sent again after that delay; the request counts as retried
    when a retry gets through and as failed when the retries run out. The server here is a
    stand-in on loopback that refuses as the API's admission control does (503, ``Retry-After: 1``):
    body ``n`` 1 once, ``n`` 2 always."""
    seen: dict[int, int] = {}

    def respond(request):
        n = request["body"]["n"]
        seen[n] = seen.get(n, 0) + 1
        if n == 2 or (n == 1 and seen[n] == 1):
            return 503, {"detail": "busy"}, {"Retry-After": "1"}
        return 200, {"prediction_id": f"id-{n}"}

    with StandInHttpServer(respond, keep_alive=True) as server:
        bodies = [f'{{"n": {n}}}' for n in range(3)]
        result = start_load(
            LoadPlan(f"{server.url}/predict", bodies, rate=3, seconds=1, retries=2), tmp_path
        ).result()

    whole = result.window()
    assert whole.requests == 3 and whole.ok == 2 and whole.failed == 1 and whole.statuses == {200: 2, 503: 1}
    assert whole.retried == 1  # n=1: refused once, then answered
    assert whole.refusals == 1 + 3  # n=2: refused, retried twice, refused each time: the client gives up
    assert seen == {0: 1, 1: 2, 2: 3}
    assert result.returned_ids() == {"id-0", "id-1"}
    assert result.latency[1] >= 1.0  # counted from the due time, through the Retry-After wait
    assert len(result.refusal_times()) == 4


@pytest.mark.chaos
def test_the_generators_closed_loop_counts_answers_in_its_window_only(stand_in_server, tmp_path):
    """The capacity the scenarios take a share of: answers per second of the generator's own
    closed loop, 2xx only, refusals and failures counted apart; the warm-up is not counted. The
    stand-in server notes when it answered each 2xx (``time.monotonic``, one clock for every
    process of the machine): its own count of those in the generator's window gives the rate."""
    seen: list[int] = []
    answered: list[float] = []  # when the server answered 2xx
    seconds, clients = 0.5, 3

    def respond(request):
        n = request["body"]["n"]
        seen.append(n)
        if n == 1:
            return 503, {"detail": "busy"}, {"Retry-After": "1"}
        if n == 2:
            return 500, {"detail": "broken"}
        answered.append(time.monotonic())
        return 200, {"prediction_id": "x", "model_version": "1"}

    server = stand_in_server(respond, keep_alive=True)
    bodies = [f'{{"n": {n}}}' for n in range(3)]
    capacity = generator_capacity(
        f"{server.url}/predict", bodies, seconds, tmp_path, connections=clients, warmup=0.5
    )

    counted = capacity.ok + capacity.refused + capacity.failed
    assert capacity.ok > 0 and capacity.refused > 0 and capacity.failed > 0
    assert (
        max(capacity.ok, capacity.refused, capacity.failed)
        - min(capacity.ok, capacity.refused, capacity.failed)
        <= 3
    )
    assert counted < len(seen)  # the warm-up's answers are not counted
    # the two counts differ only by answers in flight at the window's edges: one per client at most
    in_window = sum(capacity.window_start <= t < capacity.window_start + seconds for t in answered)
    assert abs(capacity.rate - in_window / seconds) <= clients / seconds, (capacity, in_window)
    assert "status=500" in capacity.errors[0]
