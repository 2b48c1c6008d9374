"""What the API's per-product histograms cost through prometheus-client's public API.

Each prediction updates two histograms (``rakuten_prediction_confidence``,
``rakuten_input_length_chars``). Measured here for one request of 1 and of 1,000 products:
``Histogram.observe`` once per product, against ``serving.metrics.BatchHistogram.observe_many``
once per request (per-bucket counts, one ``Counter.inc`` per bucket that got values and one for
the sum), in one process and with ``PROMETHEUS_MULTIPROC_DIR`` (mmap'ed files, as
``serve --workers N`` runs). prometheus-client picks its value class at import, so each mode
runs in a child process. Median of 7 alternating rounds; microseconds per request, both histograms.

Run: ``python -m benchmarks.bench_metrics`` (a few seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from benchmarks.common import print_table

CHILD = r"""
import json, random, statistics, sys, time
from prometheus_client import Histogram
from rakuten_mlops.serving.metrics import CONFIDENCE_BUCKETS, LENGTH_BUCKETS, BatchHistogram

rng = random.Random(7)
per_item = [Histogram("c", "c", buckets=CONFIDENCE_BUCKETS), Histogram("l", "l", buckets=LENGTH_BUCKETS)]
batched = [BatchHistogram("cb", "c", CONFIDENCE_BUCKETS), BatchHistogram("lb", "l", LENGTH_BUCKETS)]
out = {}
for size in (1, 1000):
    values = [[rng.random() for _ in range(size)], [float(rng.randint(20, 3000)) for _ in range(size)]]
    repeat = max(1, 2000 // size)

    def observe():
        for hist, vals in zip(per_item, values):
            o = hist.observe
            for v in vals:
                o(v)

    def observe_many():
        for hist, vals in zip(batched, values):
            hist.observe_many(vals)

    times = {"observe": [], "observe_many": []}
    for _ in range(7):
        for name, fn in (("observe", observe), ("observe_many", observe_many)):
            started = time.perf_counter()
            for _ in range(repeat):
                fn()
            times[name].append((time.perf_counter() - started) / repeat * 1e6)
    out[size] = {name: statistics.median(t) for name, t in times.items()}
print(json.dumps(out))
"""


def _measure(multiprocess: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = tmp
        done = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
        )
    return json.loads(done.stdout)


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f}")
    rows = []
    for multiprocess in (False, True):
        measured = _measure(multiprocess)
        for size, times in measured.items():
            rows.append(
                [
                    "PROMETHEUS_MULTIPROC_DIR" if multiprocess else "one process",
                    int(size),
                    times["observe"],
                    times["observe_many"],
                    f"{times['observe'] / times['observe_many']:.1f}x",
                ]
            )
    print_table(
        [
            "mode",
            "products per request",
            "Histogram.observe per product",
            "BatchHistogram.observe_many",
            "ratio",
        ],
        rows,
    )
    print("(microseconds per request, both histograms)")


if __name__ == "__main__":
    main()
