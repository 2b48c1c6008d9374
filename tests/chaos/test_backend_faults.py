"""The API under load while a backend fails.

Each scenario runs the cluster-like stack (``tests.chaos.stack``: private Postgres, SeaweedFS
S3, MLflow server on both, ``rakuten-mlops serve`` with the default settings, admission control
included), measures the API's capacity, then drives 70 % of it as a constant open-loop rate for
five minutes (``scaled(300)``) while one backend fails 30 % of the way in.

Capacity is what the campaign's own generator (``tests.support.load``) gets answered in a closed
loop of 16 clients (single predictions), run in its own process as during the load: on a 2-core
machine the generator's CPU is taken from the API while it measures, as it is during the run
(``generator_capacity``). ``wrk`` alone (C, negligible CPU per request) is recorded next to it,
not used: 70 % of what the API does with a core to itself can be more than it gets once the
generator and other jobs take their share, and the scenario would then measure an overload
(docs/chaos.md). With the generator's own closed loop as the reference, 70 % is a rate it can
send with its CPU taken, which ``send lag`` (how late the first attempts left, p99) and the
generator's stalls show in the table; the API then runs at 70 % of what it achieves in these
conditions (or less, when the generator is the bottleneck: the ratio to ``wrk`` says which). The faults:

- ``postgres``: ``pg_ctl stop -m fast`` (the API's prediction log and MLflow's store go away),
  started again a minute later (20 % of the run);
- ``postgres-twice``: the same, twice in one run (down from 20 % to 40 % and from 60 % to 80 %):
  whether the memory an outage leaves in the API is taken again by the next one or added to;
- ``mlflow``: the MLflow server is SIGKILLed, restarted a minute later on the same port;
- ``s3``: SeaweedFS is SIGKILLed and stays down to the end of the load; meanwhile a new version
  is promoted, which the API cannot download. After the load it is started again (same ports,
  same data).

The client honours ``Retry-After`` as HTTP clients do: a 503 from the API's admission control
(a worker at its in-flight limit during a stall) is sent again after the delay, up to
``RETRIES`` times. A refused request that a retry gets through is not failed, and is counted (the
refusals, and when they came, are figures of the table); a client that runs out of retries is a
failed request.

What a user checks, and the table prints: no request fails; the prediction log loses no more
than its documented bound (docs/prediction-log.md: what a full queue drops during an outage) and
logs no prediction twice; the API's memory is flat (median RSS of the last tenth of the run
within 10 % of the median before the fault; with two outages, also within 2 % of the median
between them: what the first outage left is reused, not grown); p99 latency while the backend is
down next to the p99 before it. After the fault the API follows a promotion again (postgres,
mlflow), or keeps serving the version it has while the store is down (s3: a model that cannot be
downloaded never replaces the served one), then serves the promoted one once the store is back;
within ``FOLLOW_TIMEOUT`` either way.
"""

from __future__ import annotations

import math
import signal
import time

import pytest

from rakuten_mlops.serving.prediction_log import MAX_RETRY_DELAY_SECONDS
from tests.chaos.conftest import scaled
from tests.chaos.stack import SINGLE_BODIES, SINGLE_BODY, cluster_stack, kill, machine_load
from tests.support.load import LoadPlan, LoadResult, closed_loop_capacity, generator_capacity, start_load

LOAD_SHARE = 0.7
CLIENTS = 16  # the closed loop's clients: a quarter of the API's in-flight limit, nothing refused
RSS_GROWTH_LIMIT = 0.10
RSS_GROWTH_ACROSS_OUTAGES = 0.02
RETRIES = 3
FOLLOW_TIMEOUT = 90  # seconds for the API to serve version 2 once the registry side is whole again
# (share of the run when the backend goes down, share it stays down; None: to the end)
OUTAGES = {
    "postgres": [(0.3, 0.2)],
    "postgres-twice": [(0.2, 0.2), (0.6, 0.2)],
    "mlflow": [(0.3, 0.2)],
    "s3": [(0.3, None)],
}


def lost_bound(rate: float, outage: float, queue_size: int) -> int:
    """Predictions the log may drop while its database is away for ``outage`` seconds at ``rate``
    rows/s: the queue holds ``queue_size`` rows; after the database is back the writer tries again
    within its longest retry delay, so rows keep queueing for up to that much longer."""
    return max(0, math.ceil(rate * (outage + MAX_RETRY_DELAY_SECONDS) - queue_size))


def refusals_by_time(result: LoadResult, bucket: float, limit: int = 12) -> str:
    """When the refusals came: ``start-end s: count`` per ``bucket`` seconds of the run that had any."""
    counts: dict[int, int] = {}
    for t in result.refusal_times():
        counts[int(t // bucket)] = counts.get(int(t // bucket), 0) + 1
    parts = [f"{k * bucket:.0f}-{(k + 1) * bucket:.0f} s: {n}" for k, n in sorted(counts.items())]
    return (
        "; ".join(parts[:limit] + ([f"... {len(parts) - limit} more"] if len(parts) > limit else []))
        or "none"
    )


@pytest.mark.chaos
@pytest.mark.long
@pytest.mark.parametrize("fault", list(OUTAGES))
def test_api_under_load_while_a_backend_fails(fault, tmp_path, chaos_figures):
    total = scaled(300, floor=30)
    backend = fault.split("-")[0]
    record = chaos_figures.record
    with cluster_stack(tmp_path / "stack") as stack:
        v1, v2 = stack.versions
        record("machine load at start (1/5/15 min)", machine_load())
        url = f"{stack.api.url}/predict"
        alone = closed_loop_capacity(url, SINGLE_BODY, scaled(15, floor=3), CLIENTS)
        capacity = generator_capacity(url, SINGLE_BODIES, scaled(15, floor=3), tmp_path, CLIENTS)
        assert capacity.failed == 0, capacity.errors
        rate = LOAD_SHARE * capacity.rate
        record(f"capacity, wrk alone ({CLIENTS} connections, req/s)", alone)
        record(f"capacity, this generator closed loop ({CLIENTS} clients, req/s)", capacity.rate)
        record("generator CPU while measuring capacity (share of one core)", capacity.cpu_share)
        record("load (70 % of the generator's capacity, req/s)", rate)

        plan = LoadPlan(url, SINGLE_BODIES, rate, total, retries=RETRIES)
        load = start_load(plan, tmp_path, fault)
        downs: list[tuple[float, float | None]] = []  # (down, up) as time.time()
        try:
            begun = time.time()
            for at, length in OUTAGES[fault]:
                time.sleep(max(0.0, begun + at * total - time.time()))
                down = time.time()
                if backend == "postgres":
                    stack.pg.stop("fast")
                elif backend == "mlflow":
                    kill(stack.mlflow.process)
                else:
                    kill(stack.s3.process)
                if length is None:
                    time.sleep(0.1 * total)  # the API's poll now finds a version it cannot download
                    stack.promote(v2, v1, "chaos: promoted while the object store is down")
                    downs.append((down, None))
                    continue
                time.sleep(max(0.0, down + length * total - time.time()))
                if backend == "postgres":
                    stack.pg.start()
                else:
                    stack.mlflow.start()
                downs.append((down, time.time()))
            result = load.result()
        finally:
            load.stop(grace=5)
        end = result.started + result.wall_seconds
        record("machine load at end (1/5/15 min)", machine_load())

        # requests: none fails, before, during or after the fault; refusals retried are counted apart
        whole = result.window()
        first_down = downs[0][0] - result.started
        record("requests sent", whole.requests)
        record(
            "failed requests (a client out of retries counts)", whole.failed, goal="0", met=whole.failed == 0
        )
        record(f"refused (503 + Retry-After; client retries up to {RETRIES}x)", whole.refusals)
        record("requests that got through on a retry", whole.retried)
        record("refusals before / during / after the fault", _by_phase(result, downs, end))
        record("refusals, when (s since the load began)", refusals_by_time(result, bucket=total / 10))
        before = result.window(0.1 * total, first_down)
        record("p99 before the fault (ms)", before.p99 * 1000)
        for n, (down, up) in enumerate(downs, 1):
            during = result.window(down - result.started, (up or end) - result.started)
            label = "p99 during the fault (ms)" if len(downs) == 1 else f"p99 during outage {n} (ms)"
            record(label, during.p99 * 1000)
        record("generator CPU (share of one core)", result.cpu_share())
        record("generator send lag p99 (ms; its backlog, ~0 when on schedule)", result.send_lag() * 1000)
        stalls, stalled, longest = result.stalled()
        record(
            "generator stalls over 50 ms: count / total s / longest s",
            f"{stalls} / {stalled:.1f} / {longest:.2f}",
        )

        # memory: flat from before the fault to the end of the run (and, with two outages, from
        # between them to the end: the second reuses what the first left)
        rss_before = stack.memory.median(
            max(result.started + 0.1 * total, downs[0][0] - 0.15 * total), downs[0][0]
        )
        rss_after = stack.memory.median(end - 0.1 * total, end + 1)
        growth = rss_after / rss_before - 1
        record("API RSS before the fault (MiB)", rss_before / 2**20)
        across = None
        if len(downs) == 2:
            rss_between = stack.memory.median(downs[1][0] - 0.1 * total, downs[1][0])
            across = rss_after / rss_between - 1
            record("API RSS between the outages (MiB)", rss_between / 2**20)
        record("API RSS at the end (MiB)", rss_after / 2**20)
        record(
            "API RSS growth",
            f"{growth:+.1%}",
            goal=f"<= {RSS_GROWTH_LIMIT:.0%}",
            met=growth <= RSS_GROWTH_LIMIT,
        )
        if across is not None:
            record(
                "API RSS growth across the second outage",
                f"{across:+.1%}",
                goal=f"<= {RSS_GROWTH_ACROSS_OUTAGES:.0%}",
                met=across <= RSS_GROWTH_ACROSS_OUTAGES,
            )

        # the registry side: the API follows the registry again, or keeps what it has
        if backend == "s3":
            served = {v for versions in result.versions for v in versions}
            record("versions answered", ",".join(sorted(served)), goal=v1, met=served == {v1})
            assert stack.served_version() == v1
            # the store comes back (same ports, same data): the API must now load version 2
            stack.s3.process.start(timeout=60)
            back = time.time()
            record("version 2 served after S3 is back (s)", stack.wait_served(v2, FOLLOW_TIMEOUT) - back)
        else:
            promoted = time.time()
            stack.promote(v2, v1, "chaos: the registry is back")
            followed = stack.wait_served(v2, timeout=FOLLOW_TIMEOUT) - promoted
            record("promotion followed after the fault (s)", followed)

        copies = stack.model_copies_on_disk()[0]
        record("model copies left on the API's disk", copies, goal="0", met=copies == 0)

        # the prediction log, after a graceful shutdown wrote what was queued
        assert stack.api.terminate() in (0, -signal.SIGTERM), stack.api.log()  # uvicorn re-raises it
        if backend == "postgres" and not stack.pg.running():
            stack.pg.start()
        logged = stack.logged_ids()
        returned = result.returned_ids()
        lost = len(returned - set(logged))
        queue = stack.settings().prediction_log_queue_size
        bound = sum(lost_bound(rate, up - down, queue) for down, up in downs) if backend == "postgres" else 0
        record("predictions returned", len(returned))
        record("predictions lost from the log", lost, goal=f"<= {bound}", met=lost <= bound)
        twice = len(logged) - len(set(logged))
        record("rows logged twice", twice, goal="0", met=twice == 0)

    assert whole.failed == 0, result.failures()
    assert lost <= bound, f"{lost} predictions missing from the log (bound {bound})"
    assert twice == 0, f"{twice} predictions logged more than once"
    assert growth <= RSS_GROWTH_LIMIT, f"RSS grew {growth:+.1%}"
    if across is not None:
        assert across <= RSS_GROWTH_ACROSS_OUTAGES, f"RSS grew {across:+.1%} across the second outage"
    assert copies == 0, f"{copies} downloaded models left in the API's temporary directory"
    if backend == "s3":
        assert served == {v1}, f"answers came from {served}, expected only {v1}"


def _by_phase(result: LoadResult, downs: list[tuple[float, float | None]], end: float) -> str:
    """Refusals before the first fault, while a backend was down, and after (``a / b / c``)."""
    spans = [(down - result.started, (up or end) - result.started) for down, up in downs]
    before = during = after = 0
    for t in result.refusal_times():
        if t < spans[0][0]:
            before += 1
        elif any(start <= t < stop for start, stop in spans):
            during += 1
        else:
            after += 1
    return f"{before} / {during} / {after}"
