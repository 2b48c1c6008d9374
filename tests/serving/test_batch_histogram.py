"""``BatchHistogram``: a request batch's values counted per bucket, shown as the histogram that
``Histogram.observe`` per value would show, in one process and across worker processes."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from rakuten_mlops.serving.metrics import (
    CONFIDENCE_BUCKETS,
    LENGTH_BUCKETS,
    BatchHistogram,
    LiveCollector,
    as_histograms,
)


class _Shown:
    """A registry's families with the batched histograms shown as histograms (what /metrics does)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self):
        return as_histograms(self.registry.collect())


def exposition(registry: CollectorRegistry) -> list[str]:
    shown = CollectorRegistry()
    shown.register(_Shown(registry))
    return [
        line
        for line in generate_latest(shown).decode().splitlines()
        if "_created" not in line  # only Histogram has them; Prometheus does not read them
    ]


def batches(values: list[float], sizes: list[int]) -> list[list[float]]:
    out, start = [], 0
    for size in sizes:
        out.append(values[start : start + size])
        start += size
    return out


@pytest.mark.parametrize(
    ("buckets", "values"),
    [
        # on the bounds, between them, above the last one, zero
        (CONFIDENCE_BUCKETS, [0.0, 0.1, 0.1000001, 0.95, 0.99, 1.0, 0.5, 0.3, 0.7] * 5),
        (LENGTH_BUCKETS, [0, 10, 11, 25, 799, 800, 20_000, 20_001, 150_000, 64] * 5),
        (CONFIDENCE_BUCKETS, [random.Random(7).random() for _ in range(3000)]),
    ],
    ids=["confidence-bounds", "length-bounds", "confidence-random"],
)
def test_the_exposition_is_the_histogram_s(buckets, values):
    """Batches of 1, a few (bisect) and many (numpy) values give the text a Histogram gives."""
    expected, batched = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("rk_test_values", "Some values.", buckets=buckets, registry=expected)
    for value in values:
        histogram.observe(value)
    shown = BatchHistogram("rk_test_values", "Some values.", buckets, registry=batched)
    sizes = [1, 3, 16, 17, len(values)]
    for batch in batches(values, sizes):
        shown.observe_many(batch)
    got, want = exposition(batched), exposition(expected)
    sums = [(line, w) for line, w in zip(got, want, strict=True) if line.startswith("rk_test_values_sum")]
    assert [line for line in got if "_sum" not in line] == [line for line in want if "_sum" not in line]
    ((got_sum, want_sum),) = sums  # the same values added in another order: equal to rounding
    assert math.isclose(float(got_sum.split()[-1]), float(want_sum.split()[-1]), rel_tol=1e-12)
    count = next(line for line in got if line.startswith("rk_test_values_count"))
    assert float(count.split()[-1]) == len(values)
    assert not any("_parts" in line for line in got)  # the counter is shown only as the histogram


def test_an_empty_batch_changes_nothing_and_series_exist_from_zero():
    registry = CollectorRegistry()
    shown = BatchHistogram("rk_test_empty", "Nothing yet.", (1, 2), registry=registry)
    shown.observe_many([])
    text = exposition(registry)
    assert 'rk_test_empty_bucket{le="1.0"} 0.0' in text
    assert 'rk_test_empty_bucket{le="+Inf"} 0.0' in text
    assert "rk_test_empty_count 0.0" in text and "rk_test_empty_sum 0.0" in text


def test_negative_values_are_refused():
    shown = BatchHistogram("rk_test_negative", "No.", (1, 2), registry=CollectorRegistry())
    with pytest.raises(ValueError):
        shown.observe_many([-1.0])


WORKER = r"""
import json, sys
from prometheus_client import CollectorRegistry, Histogram
from rakuten_mlops.serving.metrics import LENGTH_BUCKETS, BatchHistogram

values = json.loads(sys.argv[1])
histogram = Histogram("rk_mp_reference", "Reference.", buckets=LENGTH_BUCKETS, registry=CollectorRegistry())
shown = BatchHistogram("rk_mp_batched", "Reference.", LENGTH_BUCKETS, registry=CollectorRegistry())
for value in values:
    histogram.observe(value)
shown.observe_many(values)
"""


def test_workers_add_up_as_histograms_do(tmp_path):
    """Two processes write their mmap files (``PROMETHEUS_MULTIPROC_DIR``); the scrape merges the
    batched histogram to the same buckets, count and sum as a Histogram observed value by value."""
    rng = random.Random(3)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    sent = []
    for size in (16, 700):  # the bisect path and the numpy path, one per worker
        values = [float(rng.randint(0, 30_000)) for _ in range(size)]
        sent += values
        subprocess.run([sys.executable, "-c", WORKER, json.dumps(values)], env=env, check=True, timeout=60)
    # the scraping worker knows the batched histogram (api_metrics() made it): so does this process
    BatchHistogram("rk_mp_batched", "Reference.", LENGTH_BUCKETS, registry=CollectorRegistry())
    families = {f.name: f for f in LiveCollector(str(tmp_path)).collect()}
    reference, batched = families["rk_mp_reference"], families["rk_mp_batched"]
    assert batched.type == "histogram"
    assert sorted(
        (s.name.removeprefix("rk_mp_reference"), str(s.labels), s.value) for s in reference.samples
    ) == sorted(
        (s.name.removeprefix("rk_mp_batched"), str(s.labels), s.value) for s in batched.samples
    )  # integers: the sums are exact too
    values = {s.name.removeprefix("rk_mp_batched"): s.value for s in batched.samples if not s.labels}
    assert values["_count"] == len(sent)
    assert math.isclose(values["_sum"], sum(sent))
