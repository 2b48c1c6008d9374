"""Request latencies of the latency-check tests and their histograms, in the API's buckets."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable

from rakuten_mlops.serving.metrics import MODEL_LATENCY_BUCKETS

BOUNDS = (*MODEL_LATENCY_BUCKETS, math.inf)


def histogram(seconds: Iterable[float], bounds: Iterable[float] = BOUNDS) -> dict[float, float]:
    """Cumulative counts by bucket upper bound of ``seconds``, as the API's per-version latency
    histogram counts them (``bounds``: another layout's, ending with ``math.inf``)."""
    ordered = sorted(seconds)
    return {bound: float(bisect_right(ordered, bound)) for bound in bounds}


def latencies(n: int, slow: tuple[float, ...] = (), scale: float = 1.0) -> list[float]:
    """``n`` requests spread evenly over 1-5 ms (times ``scale``), the last ones replaced by ``slow``."""
    spread = [scale * (0.001 + 0.004 * i / n) for i in range(n - len(slow))]
    return spread + list(slow)


def bucket_lines(version: str, seconds: Iterable[float]) -> dict[str, float]:
    """The ``/metrics`` series of ``version``'s latency buckets (what an API pod exports)."""
    name = "rakuten_model_request_duration_seconds_bucket"
    out = {}
    for bound, count in histogram(seconds).items():
        le = "+Inf" if math.isinf(bound) else repr(float(bound))
        out[f'{name}{{model_version="{version}",le="{le}"}}'] = count
    return out
