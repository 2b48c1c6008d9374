"""Soak with hot swaps.

Thirty minutes (``scaled(1800)``) of batch requests (four products each) at half the API's
capacity, on the cluster-like stack of ``tests.chaos.stack``, while every two minutes
(``scaled(120)``) a different registered version is promoted to ``production`` through the
registry adapter (compare-and-set under the registry lock, as ``rakuten-mlops rollback --to``
moves it); the API follows through its alias poll (``RAKUTEN_MODEL_POLL_SECONDS=1``).

Admission control is on, with the batch limit sized for these batches: the default
``RAKUTEN_MAX_INFLIGHT_BATCHES=2`` is meant for batches of up to 1,000 products, and two batches
of four in flight at once is less than one worker's scheduling jitter absorbs at half its
capacity (refusals from the first second, and clients running out of retries, docs/chaos.md).
The soak sets it to ``BATCHES_AT_ONCE``: as many products in flight as the single-prediction
limit allows (``RAKUTEN_MAX_INFLIGHT``, 64), in batches of four.

Capacity is what the campaign's own generator gets answered in a closed loop of a quarter of
that many clients (nothing is refused there), measured with the generator's CPU taken as it is
during the run (``tests.support.load.generator_capacity``; ``wrk`` alone at the same concurrency
is a figure of the table, to compare). The client honours ``Retry-After`` as in the
backend-fault scenarios: a refused batch is sent again after the delay, up to ``RETRIES`` times;
refusals and retried requests are counted apart, a client out of retries is a failed request.

What a user checks: no request fails; no response mixes versions (the batch's
``model_version`` and every prediction's agree); every response's version is one that held the
alias during the request: promoted before the response arrived, and not yet replaced in the
API (the time ``GET /model`` first named its successor) when the request was sent; the API's
resident memory grows less than 5 % from the end of warm-up (once every version has been loaded
once: after the third swap) to the last minute of the run.
"""

from __future__ import annotations

import json
import time

import pytest

from rakuten_mlops.settings import Settings
from tests.chaos.conftest import scaled
from tests.chaos.stack import SINGLE_BODIES, cluster_stack, machine_load
from tests.support.load import (
    LoadPlan,
    LoadResult,
    closed_loop_capacity,
    generator_capacity,
    percentile,
    start_load,
)

LOAD_SHARE = 0.5
RSS_GROWTH_LIMIT = 0.05
RETRIES = 3
BATCH_ITEMS = 4
BATCH_BODIES = [
    json.dumps({"items": [json.loads(body) for body in SINGLE_BODIES[i : i + BATCH_ITEMS]]}) for i in range(2)
]
BATCHES_AT_ONCE = Settings.model_fields["max_inflight"].default // BATCH_ITEMS
CLIENTS = BATCHES_AT_ONCE // 4


@pytest.mark.chaos
@pytest.mark.long
def test_soak_with_hot_swaps(tmp_path, chaos_figures):
    total = scaled(1800, floor=60)
    every = scaled(120, floor=10)
    record = chaos_figures.record
    with cluster_stack(
        tmp_path / "stack", versions=3, rakuten_max_inflight_batches=str(BATCHES_AT_ONCE)
    ) as stack:
        versions = stack.versions
        record("machine load at start (1/5/15 min)", machine_load())
        url = f"{stack.api.url}/predict/batch"
        alone = closed_loop_capacity(url, BATCH_BODIES[0], scaled(15, floor=3), CLIENTS)
        capacity = generator_capacity(url, BATCH_BODIES, scaled(15, floor=3), tmp_path, CLIENTS)
        assert capacity.failed == 0, capacity.errors
        rate = LOAD_SHARE * capacity.rate
        record("batches admitted in flight (RAKUTEN_MAX_INFLIGHT_BATCHES)", BATCHES_AT_ONCE)
        record(f"capacity, wrk alone ({CLIENTS} connections, batches of 4/s)", alone)
        record(f"capacity, this generator closed loop ({CLIENTS} clients, batches/s)", capacity.rate)
        record("generator CPU while measuring capacity (share of one core)", capacity.cpu_share)
        record("load (50 % of capacity, batches/s)", rate)

        plan = LoadPlan(url, BATCH_BODIES, rate, total, collect_ids=False, retries=RETRIES)
        load = start_load(plan, tmp_path, "soak")
        try:
            begun = time.time()
            # (version, promoted at, replaced in the API at): the first was promoted before the run
            held: list[list] = [[versions[0], 0.0, float("inf")]]
            swap_seconds: list[float] = []
            swap = 1
            while begun + (swap + 1) * every <= begun + total:
                time.sleep(max(0.0, begun + swap * every - time.time()))
                current, target = held[-1][0], versions[swap % len(versions)]
                promoted = time.time()
                stack.promote(target, current, f"chaos soak: hot swap {swap}")
                held.append([target, promoted, float("inf")])
                served = stack.wait_served(target, timeout=0.8 * every)
                held[-2][2] = served
                swap_seconds.append(served - promoted)
                swap += 1
            warm = held[2][2] if len(held) > 3 else held[-2][2]  # after the third swap
            result = load.result(extra_timeout=300)
        finally:
            load.stop(grace=5)
        end = result.started + result.wall_seconds
        record("machine load at end (1/5/15 min)", machine_load())
        copies, disk_bytes = stack.model_copies_on_disk()
        record("model copies left on the API's disk", copies, goal="0", met=copies == 0)
        record("API temporary files (MiB)", disk_bytes / 2**20)

    whole = result.window()
    record("requests sent", whole.requests)
    record("failed requests (a client out of retries counts)", whole.failed, goal="0", met=whole.failed == 0)
    record(f"refused (503 + Retry-After; client retries up to {RETRIES}x)", whole.refusals)
    record("requests that got through on a retry", whole.retried)
    record("generator send lag p99 (ms)", result.send_lag() * 1000)
    stalls, stalled, longest = result.stalled()
    record(
        "generator stalls over 50 ms: count / total s / longest s",
        f"{stalls} / {stalled:.1f} / {longest:.2f}",
    )
    record("p99 over the run (ms)", whole.p99 * 1000)
    swaps_at = [promoted - result.started for _, promoted, _ in held[1:]]
    record("p99 within 10 s of a promotion (ms)", p99_near(result, swaps_at, 10.0, near=True) * 1000)
    record("p99 away from promotions (ms)", p99_near(result, swaps_at, 10.0, near=False) * 1000)
    record("hot swaps", len(swap_seconds))
    record("slowest swap, promotion to served (s)", max(swap_seconds))
    record("generator CPU (share of one core)", result.cpu_share())

    mixed, foreign = 0, []
    for i, answered in enumerate(result.versions):
        if result.status[i] // 100 != 2:
            continue
        if len(set(answered)) != 1:
            mixed += 1
            continue
        sent, done = result.started + result.sent[i], result.started + result.done[i]
        if not any(v == answered[0] and start <= done and sent <= stop for v, start, stop in held):
            foreign.append(f"t={result.sent[i]:.2f}s version {answered[0]}")
    answered_versions = {v for answered in result.versions for v in answered}
    record("versions answered", ",".join(sorted(answered_versions)), goal=",".join(sorted(versions)))
    record("responses mixing versions", mixed, goal="0", met=mixed == 0)
    record("responses from a version not holding the alias", len(foreign), goal="0", met=not foreign)

    rss_warm = stack.memory.median(warm, warm + every)
    rss_end = stack.memory.median(end - min(60.0, every), end + 1)
    growth = rss_end / rss_warm - 1
    record("API RSS after warm-up (MiB)", rss_warm / 2**20)
    record("API RSS at the end (MiB)", rss_end / 2**20)
    record(
        "API RSS growth", f"{growth:+.1%}", goal=f"< {RSS_GROWTH_LIMIT:.0%}", met=growth < RSS_GROWTH_LIMIT
    )

    assert whole.failed == 0, result.failures()
    assert len(swap_seconds) >= 3
    assert answered_versions == set(versions), "the swaps did not reach the responses"
    assert mixed == 0
    assert not foreign, foreign[:10]
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth:+.1%}"
    assert copies == 0, f"{copies} downloaded models left in the API's temporary directory"


def p99_near(result: LoadResult, instants: list[float], seconds: float, *, near: bool) -> float:
    """p99 of the successful requests due within ``seconds`` of one of ``instants`` (or, with
    ``near=False``, of those due farther from all of them)."""
    latencies = sorted(
        done - due
        for due, done, status in zip(result.due, result.done, result.status, strict=True)
        if status // 100 == 2 and any(abs(due - t) <= seconds for t in instants) == near
    )
    return percentile(latencies, 99) or 0.0
