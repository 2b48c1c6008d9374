"""The API under load while a backend fails.

Each scenario runs the cluster-like stack (``tests.chaos.stack``: private Postgres, SeaweedFS
S3, MLflow server on both, ``rakuten-mlops serve``), measures the API's capacity with ``wrk``
(single predictions, closed loop), then drives 70 % of it as a constant open-loop rate for five
minutes (``scaled(300)``) while one backend fails 30 % of the way in:

- ``postgres``: ``pg_ctl stop -m fast`` (the API's prediction log and MLflow's store go away),
  started again a minute later (20 % of the run);
- ``mlflow``: the MLflow server is SIGKILLed, restarted a minute later on the same port;
- ``s3``: SeaweedFS is SIGKILLed and stays down; meanwhile a new version is promoted, which
  the API cannot download.

What a user checks, and the table prints: no request fails; the prediction log loses no more
than its documented bound (docs/prediction-log.md: what a full queue drops during an outage);
the API's memory is flat (median RSS of the last tenth of the run within 10 % of the median
before the fault); p99 latency while the backend is down next to the p99 before it. After the
fault the API follows a promotion again (postgres, mlflow), or keeps serving the version it has
(s3: a model that cannot be downloaded never replaces the served one).
"""

from __future__ import annotations

import math
import signal
import time

import pytest

from rakuten_mlops.serving.prediction_log import MAX_RETRY_DELAY_SECONDS
from tests.chaos.conftest import scaled
from tests.chaos.stack import SINGLE_BODIES, SINGLE_BODY, cluster_stack, kill, machine_load
from tests.support.load import LoadPlan, closed_loop_capacity, start_load

LOAD_SHARE = 0.7
RSS_GROWTH_LIMIT = 0.10


def lost_bound(rate: float, outage: float, queue_size: int) -> int:
    """Predictions the log may drop while its database is away for ``outage`` seconds at ``rate``
    rows/s: the queue holds ``queue_size`` rows; after the database is back the writer tries again
    within its longest retry delay, so rows keep queueing for up to that much longer."""
    return max(0, math.ceil(rate * (outage + MAX_RETRY_DELAY_SECONDS) - queue_size))


@pytest.mark.chaos
@pytest.mark.long
@pytest.mark.parametrize("fault", ["postgres", "mlflow", "s3"])
def test_api_under_load_while_a_backend_fails(fault, tmp_path, chaos_figures):
    total = scaled(300, floor=30)
    fault_at, outage = 0.3 * total, 0.2 * total
    record = chaos_figures.record
    with cluster_stack(tmp_path / "stack") as stack:
        v1, v2 = stack.versions
        record("machine load at start (1/5/15 min)", machine_load())
        capacity = closed_loop_capacity(f"{stack.api.url}/predict", SINGLE_BODY, scaled(15, floor=3))
        rate = LOAD_SHARE * capacity
        record("capacity (wrk, 16 connections, req/s)", capacity)
        record("load (70 % of capacity, req/s)", rate)

        load = start_load(LoadPlan(f"{stack.api.url}/predict", SINGLE_BODIES, rate, total), tmp_path, fault)
        try:
            begun = time.time()
            time.sleep(max(0.0, begun + fault_at - time.time()))
            down = time.time()
            up = None
            if fault == "postgres":
                stack.pg.stop("fast")
            elif fault == "mlflow":
                kill(stack.mlflow.process)
            else:
                kill(stack.s3.process)
            if fault == "s3":
                time.sleep(0.1 * total)  # the API's poll now finds a version it cannot download
                stack.promote(v2, v1, "chaos: promoted while the object store is down")
            else:
                time.sleep(max(0.0, down + outage - time.time()))
                if fault == "postgres":
                    stack.pg.start()
                else:
                    stack.mlflow.start()
                up = time.time()
            result = load.result()
        finally:
            load.stop(grace=5)
        end = result.started + result.wall_seconds
        record("machine load at end (1/5/15 min)", machine_load())

        # requests: none fails, before, during or after the fault
        whole = result.window()
        record("requests sent", whole.requests)
        record("failed requests", whole.failed, goal="0", met=whole.failed == 0)
        before = result.window(0.1 * total, down - result.started)
        during = result.window(down - result.started, (up or end) - result.started)
        record("p99 before the fault (ms)", before.p99 * 1000)
        record("p99 during the fault (ms)", during.p99 * 1000)
        record("generator CPU (share of one core)", result.cpu_share())

        # memory: flat from before the fault to the end of the run
        rss_before = stack.memory.median(result.started + 0.15 * total, down)
        rss_after = stack.memory.median(end - 0.1 * total, end + 1)
        growth = rss_after / rss_before - 1
        record("API RSS before the fault (MiB)", rss_before / 2**20)
        record("API RSS at the end (MiB)", rss_after / 2**20)
        record(
            "API RSS growth",
            f"{growth:+.1%}",
            goal=f"<= {RSS_GROWTH_LIMIT:.0%}",
            met=growth <= RSS_GROWTH_LIMIT,
        )

        # the registry side: the API follows the registry again, or keeps what it has
        if fault == "s3":
            served = {v for versions in result.versions for v in versions}
            record("versions answered", ",".join(sorted(served)), goal=v1, met=served == {v1})
            assert stack.served_version() == v1
        else:
            promoted = time.time()
            stack.promote(v2, v1, "chaos: the registry is back")
            followed = stack.wait_served(v2, timeout=90) - promoted
            record("promotion followed after the fault (s)", followed)

        copies = stack.model_copies_on_disk()[0]
        record("model copies left on the API's disk", copies, goal="0", met=copies == 0)

        # the prediction log, after a graceful shutdown wrote what was queued
        assert stack.api.terminate() in (0, -signal.SIGTERM), stack.api.log()  # uvicorn re-raises it
        if fault == "postgres" and not stack.pg.running():
            stack.pg.start()
        logged = stack.logged_ids()
        returned = result.returned_ids()
        lost = len(returned - set(logged))
        bound = (
            lost_bound(rate, outage, stack.settings().prediction_log_queue_size) if fault == "postgres" else 0
        )
        record("predictions returned", len(returned))
        record("predictions lost from the log", lost, goal=f"<= {bound}", met=lost <= bound)
        record("rows logged twice", len(logged) - len(set(logged)))

    assert whole.failed == 0, result.failures()
    assert lost <= bound, f"{lost} predictions missing from the log (bound {bound})"
    assert growth <= RSS_GROWTH_LIMIT, f"RSS grew {growth:+.1%}"
    assert copies == 0, f"{copies} downloaded models left in the API's temporary directory"
    if fault == "s3":
        assert served == {v1}, f"answers came from {served}, expected only {v1}"
