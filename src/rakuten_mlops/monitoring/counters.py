"""Reading Prometheus counters over a window from their raw samples.

``increase()`` over a window extrapolates each series to the window's edges from its own
samples, so it rarely answers a whole count, and two counters read in two queries are read at
two moments: a ratio of them (shadow agreements over shadow samples) can pass 1. Reading every
counter of a ratio from one instant query of a range vector (their raw samples, at one moment)
and summing each series' rises answers what was counted, and the same window for all of them.
The operator reads its rollout's counters with this function too.
"""

from __future__ import annotations

from collections.abc import Sequence


def counted(values: Sequence[float]) -> float:
    """What one counter series counted from its first sample to its last (oldest first).

    The sum of its rises; a value below the one before is a restart of its process (counters
    start again at 0), so that value is what it counted since. A series that appears in the
    window counts from its first sample, which is 0 for the series the API creates up front.
    """
    return sum(
        now - before if now >= before else now for before, now in zip(values, values[1:], strict=False)
    )
