"""The operator's latency check on resampled real answers, in the API's two bucket layouts.

Input: the answers the delivery scenarios' client got (``RAKUTEN_DELIVERY_TIMES=<dir> pytest -m ""
tests/operator/test_delivery_scenarios.py``; each file holds ``[[monotonic, version, seconds],
...]``). The pool is every answer of version 1 (the stable version) of the scenarios whose
stable version is the compiled runner's (``kinds[0] == "stable"``).

For each canary size ``n`` (60, 92, 300), ``DRAWS`` times: a 450-request stable window and an
``n``-request canary drawn from the pool, judged by ``rakuten_operator.analysis.latency_check``
(the operator's own code: quantile ``1 - 5/n``, bucket floor one bucket up) at the chart's limit
1.5 and at 2.0, with each request's latency counted in
- ``LATENCY_BUCKETS`` (the HTTP histograms' layout, which the per-version histogram used before),
- ``MODEL_LATENCY_BUCKETS`` (the per-version histogram's layout now),
for three canaries: the same distribution (a false abort when stopped), every request 3x as
long, every request 2x as long. Printed: the share of draws stopped, per layout. Both layouts
judge the same draws.

Run: ``python -m benchmarks.bench_latency_check <dir or files>`` (not part of ``make bench``).
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

from benchmarks.common import print_table
from rakuten_mlops.serving.metrics import LATENCY_BUCKETS, MODEL_LATENCY_BUCKETS
from rakuten_operator.analysis import Signals, latency_check
from tests.operator.latency_samples import histogram

DRAWS = 400
STABLE = 450
SIZES = (60, 92, 300)
LIMITS = (1.5, 2.0)
LAYOUTS = {  # bounds as a Prometheus histogram counts them, +Inf last
    "LATENCY_BUCKETS (before)": (*LATENCY_BUCKETS, math.inf),
    "MODEL_LATENCY_BUCKETS (now)": (*MODEL_LATENCY_BUCKETS, math.inf),
}
CANARIES = {
    "same (false abort)": lambda x: x,
    "3x as long": lambda x: 3 * x,
    "2x as long": lambda x: 2 * x,
}


def pool(paths: list[Path]) -> list[float]:
    files = [f for p in paths for f in (sorted(p.glob("*.json")) if p.is_dir() else [p])]
    out = []
    for f in files:
        data = json.loads(f.read_text())
        if data.get("kinds", ["stable"])[0] == "stable":
            out += [seconds for _, version, seconds in data["times"] if version == "1"]
    return out


def main(argv: list[str]) -> None:
    answers = pool([Path(a) for a in argv])
    if len(answers) < 500:
        raise SystemExit(f"need at least 500 answers of a compiled stable version, got {len(answers)}")
    ranked = sorted(answers)
    print(
        f"pool: {len(answers)} answers, median {1000 * ranked[len(ranked) // 2]:.2f} ms, "
        f"p95 {1000 * ranked[int(0.95 * len(ranked))]:.2f} ms, "
        f"{sum(x > 0.02 for x in answers) / len(answers):.1%} over 20 ms; {DRAWS} draws per size"
    )
    rng = random.Random(1)
    stopped: dict[tuple, int] = {}
    for n in SIZES:
        for _ in range(DRAWS):
            stable, canary = rng.choices(answers, k=STABLE), rng.choices(answers, k=n)
            for layout, bounds in LAYOUTS.items():
                hs = histogram(stable, bounds)
                for name, change in CANARIES.items():
                    hc = histogram([change(x) for x in canary], bounds)
                    for limit in LIMITS:
                        check = latency_check(Signals(stable_latency=hs, candidate_latency=hc), limit)
                        stopped[(n, name, layout, limit)] = stopped.get((n, name, layout, limit), 0) + (
                            not check.ok
                        )
    rows = []
    for n in SIZES:
        for name in CANARIES:
            for layout in LAYOUTS:
                rows.append(
                    [
                        n,
                        name,
                        layout,
                        *(f"{stopped[(n, name, layout, limit)] / DRAWS:.1%}" for limit in LIMITS),
                    ]
                )
    print_table(["canary n", "canary", "buckets", *(f"stopped at {limit}" for limit in LIMITS)], rows)


if __name__ == "__main__":
    main(sys.argv[1:])
