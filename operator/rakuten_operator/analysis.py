"""The delivery strategy of a ServedModel and the judgement of one analysis: plain functions, no I/O.

A rollout with a strategy goes through stages: ``shadow`` (the stable pods score a sample of live
requests with the candidate in the background), then one ``canary`` stage per entry of
``canary.steps`` (a canary Deployment pinned to the candidate takes that share of the traffic).
At each look the operator measures the candidate against the stable version (:class:`Signals`,
read from Prometheus by :mod:`rakuten_operator.prometheus`) and :func:`judge` says what to do.

The latency check compares one quantile of both versions' request latencies, the p99 when the
window holds enough requests, else the highest quantile the smaller sample supports
(:func:`latency_quantile`): the p99 of a few dozen requests is about their slowest one, so one
slow request (a scheduler stall on a busy node, a garbage collection) would decide it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SHADOW = "shadow"

#: The latency check's quantile leaves at least this many requests of each version above it.
TAIL_REQUESTS = 5
#: The quantile compared once the samples are large enough (what ``maxP99LatencyRatio`` names) ...
MAX_QUANTILE = 0.99
#: ... and the lowest one compared, whatever the sample (the median of up to 10 requests).
MIN_QUANTILE = 0.5


class Verdict(StrEnum):
    CONTINUE = "continue"  # this stage passed: go to the next one
    PROMOTE = "promote"  # the last stage passed: pin the candidate in the stable Deployment
    ABORT = "abort"  # a threshold is broken (or no data and onInsufficientData: abort): revert
    INSUFFICIENT = "insufficient"  # not enough requests or time yet: look again later


class OnInsufficientData(StrEnum):
    WAIT = "wait"
    PROMOTE = "promote"
    ABORT = "abort"


@dataclass(frozen=True)
class Thresholds:
    """``spec.strategy.analysis``: how far the candidate may be from the stable version."""

    max_error_rate_increase: float = 0.01
    max_p99_latency_ratio: float = 1.5
    min_agreement: float = 0.85
    max_predicted_class_shift: float = 0.15
    max_confidence_drop: float = 0.1


@dataclass(frozen=True)
class Strategy:
    """``spec.strategy`` with its defaults (the CRD applies the same ones)."""

    sample_rate: float = 0.2
    shadow_min_requests: int = 500
    shadow_max_seconds: float = 600.0
    steps: tuple[int, ...] = (10, 50)
    step_seconds: float = 300.0
    canary_min_requests: int = 300
    thresholds: Thresholds = field(default_factory=Thresholds)
    on_insufficient_data: OnInsufficientData = OnInsufficientData.WAIT

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> Strategy | None:
        """None when the spec has no strategy (readiness-only rollouts); ValueError when it is invalid."""
        if not spec:
            return None
        shadow = spec.get("shadow") or {}
        canary = spec.get("canary") or {}
        analysis = spec.get("analysis") or {}
        defaults, limits = cls(), Thresholds()
        steps = tuple(int(step) for step in canary.get("steps", defaults.steps))
        if any(not 0 < step < 100 for step in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"spec.strategy.canary.steps must rise strictly within 1..99, got {list(steps)}")
        rate = float(shadow.get("sampleRate", defaults.sample_rate))
        if not 0 <= rate <= 1:
            raise ValueError(f"spec.strategy.shadow.sampleRate must be within 0..1, got {rate}")
        mode = str(spec.get("onInsufficientData", defaults.on_insufficient_data))
        if mode not in OnInsufficientData._value2member_map_:
            raise ValueError(f"spec.strategy.onInsufficientData must be wait, promote or abort, got {mode!r}")
        return cls(
            sample_rate=rate,
            shadow_min_requests=int(shadow.get("minRequests", defaults.shadow_min_requests)),
            shadow_max_seconds=float(shadow.get("maxSeconds", defaults.shadow_max_seconds)),
            steps=steps,
            step_seconds=float(canary.get("stepSeconds", defaults.step_seconds)),
            canary_min_requests=int(canary.get("minRequests", defaults.canary_min_requests)),
            thresholds=Thresholds(
                max_error_rate_increase=float(
                    analysis.get("maxErrorRateIncrease", limits.max_error_rate_increase)
                ),
                max_p99_latency_ratio=float(analysis.get("maxP99LatencyRatio", limits.max_p99_latency_ratio)),
                min_agreement=float(analysis.get("minAgreement", limits.min_agreement)),
                max_predicted_class_shift=float(
                    analysis.get("maxPredictedClassShift", limits.max_predicted_class_shift)
                ),
                max_confidence_drop=float(analysis.get("maxConfidenceDrop", limits.max_confidence_drop)),
            ),  # fmt: skip
            on_insufficient_data=OnInsufficientData(mode),
        )

    def stage_name(self, index: int) -> str:
        """Stage -1 is the shadow, stage i >= 0 the canary at ``steps[i]`` percent."""
        return SHADOW if index < 0 else f"canary {self.steps[index]}%"

    def stage_limits(self, index: int) -> tuple[int, float, float]:
        """(minRequests, minimum seconds, seconds after which onInsufficientData decides) of a stage.

        The shadow is judged as soon as it has ``minRequests`` samples; a canary step runs at
        least ``stepSeconds``. Both hand over to ``onInsufficientData`` after ``shadow.maxSeconds``
        (for a canary step: never before ``stepSeconds``).
        """
        if index < 0:
            return self.shadow_min_requests, 0.0, self.shadow_max_seconds
        return self.canary_min_requests, self.step_seconds, max(self.step_seconds, self.shadow_max_seconds)

    def is_last(self, index: int) -> bool:
        return index >= len(self.steps) - 1


@dataclass(frozen=True)
class Signals:
    """The candidate against the stable version over one window; None = not measured.

    ``requests`` is what the stage counts towards ``minRequests``: sampled requests the candidate
    scored or failed on in the shadow, requests the canary answered in a canary step. ``inconsistent`` says
    why the window's numbers cannot all be true (more agreements than scored samples): such a
    window is not judged. ``stable_latency``/``candidate_latency`` are the window's latency
    histograms of the requests each version answered (canary steps only): cumulative counts by
    bucket upper bound in seconds, as Prometheus' ``le`` (``math.inf`` for ``+Inf``).
    """

    requests: float = 0.0
    inconsistent: str = ""
    stable_error_rate: float | None = None
    candidate_error_rate: float | None = None
    stable_latency: Mapping[float, float] = field(default_factory=dict)
    candidate_latency: Mapping[float, float] = field(default_factory=dict)
    agreement: float | None = None
    stable_classes: Mapping[str, float] = field(default_factory=dict)
    candidate_classes: Mapping[str, float] = field(default_factory=dict)
    stable_confidence: float | None = None
    candidate_confidence: float | None = None


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float
    ok: bool
    quantile: float | None = None  # the latency check: the quantile compared ...
    sample: float | None = None  # ... on this many requests (the smaller version's) ...
    seconds: tuple[float, float] | None = None  # ... its value for the candidate and the stable ...
    floor: float | None = None  # ... and the ratio from the start of the candidate's bucket (judged)

    def describe(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.3g}"
        op = ">=" if self.name == "agreement" else "<="
        basis = ""
        if self.quantile is not None:
            basis = f" as {quantile_name(self.quantile)} of {self.sample:.0f} requests"
            if self.seconds is not None:
                basis += f": {1000 * self.seconds[0]:.3g} ms vs {1000 * self.seconds[1]:.3g} ms"
            if self.floor is not None:
                basis += f", bucket floor {self.floor:.3g}"
        return f"{self.name} {value}{basis} ({'ok' if self.ok else 'NOT'} {op} {self.limit:g})"

    def as_status(self) -> dict[str, Any]:
        out = {"name": self.name, "value": None if self.value is None else round(self.value, 4),
               "limit": self.limit, "ok": self.ok}  # fmt: skip
        if self.quantile is not None:
            out.update(quantile=round(self.quantile, 4), requests=round(self.sample or 0.0, 1))
        if self.floor is not None:
            out["floor"] = round(self.floor, 4)
        return out


@dataclass(frozen=True)
class Analysis:
    """One judgement: the verdict, why, and every number it was taken on."""

    verdict: Verdict
    stage: str
    reason: str
    requests: float
    checks: tuple[Check, ...] = ()

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.ok)

    def summary(self) -> str:
        """One line for the status column and the Events: verdict, stage, requests, numbers."""
        numbers = "; ".join(check.describe() for check in self.checks if check.value is not None)
        text = f"{self.verdict} at {self.stage}: {self.reason} (n={self.requests:.0f}"
        return f"{text}; {numbers})" if numbers else f"{text})"

    def as_status(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "stage": self.stage,
            "reason": self.reason,
            "requests": round(self.requests, 1),
            "checks": [check.as_status() for check in self.checks],
        }


def total_variation(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Total variation distance between two count vectors (0 same mix, 1 disjoint); None if one is empty."""
    total_a, total_b = sum(a.values()), sum(b.values())
    if total_a <= 0 or total_b <= 0:
        return None
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0.0) / total_a - b.get(k, 0.0) / total_b) for k in keys)


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else float(value)


def quantile_name(q: float) -> str:
    """``p99``, ``p95``, ``p91.7``: a quantile as the percentile it names."""
    return f"p{100 * q:.3g}"


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of a histogram as PromQL's ``histogram_quantile`` computes it.

    ``buckets`` are cumulative counts by upper bound (``math.inf`` for ``+Inf``). The quantile
    falls in the first bucket whose count reaches ``q`` of the total and is interpolated linearly
    within it (from 0 for the first bucket); in the ``+Inf`` bucket it is the highest finite bound.
    None without a ``+Inf`` bucket or without observations.
    """
    bounds = sorted(buckets)
    if len(bounds) < 2 or not math.isinf(bounds[-1]):
        return None
    counts, highest = [], 0.0
    for bound in bounds:  # a count below the one before is an artefact of scrapes: held level
        highest = max(highest, float(buckets[bound]))
        counts.append(highest)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, count in enumerate(counts) if count >= rank)
    if index == len(bounds) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start, below = (bounds[index - 1], counts[index - 1]) if index > 0 else (0.0, 0.0)
    inside = counts[index] - below
    return start + (bounds[index] - start) * ((rank - below) / inside)


def latency_quantile(requests: float) -> float:
    """The quantile the latency check compares on a sample of ``requests``.

    The highest one with at least :data:`TAIL_REQUESTS` requests above it (``1 - 5/n``: the p95
    of 100 requests, the p99 from 500 on), capped at the p99 and never below the median. Above
    that, the quantile of a small sample is its few slowest requests, which a single stall
    decides; at ``1 - 5/n`` a version's quantile moves only when more than five of its requests
    are slow, which a slower model does to most of its requests.
    """
    if requests <= 0:
        return MIN_QUANTILE
    return min(MAX_QUANTILE, max(MIN_QUANTILE, 1.0 - TAIL_REQUESTS / requests))


def bucket_start(value: float, buckets: Mapping[float, float]) -> float:
    """The lower bound of the histogram bucket that holds ``value`` (0 for the first bucket)."""
    return max((bound for bound in buckets if bound < value), default=0.0)


def buckets_apart(low: float, high: float, buckets: Mapping[float, float]) -> int:
    """How many bucket bounds lie in ``[low, high)``: 0 same bucket, 1 the next one up ..."""
    return sum(1 for bound in buckets if low <= bound < high)


def latency_check(signals: Signals, limit: float) -> Check:
    """The candidate's latency quantile over the stable version's, at :func:`latency_quantile` of
    the smaller of the two samples (both versions at the same quantile); not measured (passes)
    when either version answered nothing in the window.

    ``value`` is the ratio of the interpolated quantiles (PromQL's); what must stay within the
    limit is ``floor``: the same ratio, except when the candidate's quantile lies in the stable
    one's bucket or the next one up, where it counts from the lower bound of the candidate's
    bucket. Within a bucket the histogram does not say where the requests lie: a candidate one
    bucket above the stable version reads up to the ratio of two bucket steps by interpolation
    alone (1.25x steps in the API's per-version buckets, ``MODEL_LATENCY_BUCKETS``, so up to
    1.56x). Two buckets up or more, the interpolated ratio stands.
    """
    stable, candidate = signals.stable_latency, signals.candidate_latency
    sample = min(max(stable.values(), default=0.0), max(candidate.values(), default=0.0))
    if sample <= 0:
        return Check("p99_latency_ratio", None, limit, True)
    q = latency_quantile(sample)
    stable_q, candidate_q = histogram_quantile(q, stable), histogram_quantile(q, candidate)
    if candidate_q is None or not stable_q:
        return Check("p99_latency_ratio", None, limit, True, q, sample)
    ratio = candidate_q / stable_q
    floor = ratio
    if buckets_apart(stable_q, candidate_q, candidate) <= 1:
        floor = min(ratio, bucket_start(candidate_q, candidate) / stable_q)
    return Check("p99_latency_ratio", ratio, limit, floor <= limit, q, sample, (candidate_q, stable_q), floor)


def checks(signals: Signals, limits: Thresholds) -> tuple[Check, ...]:
    """Each threshold against what was measured; a signal not measured passes (value None)."""
    out: list[Check] = []
    stable_err, cand_err = _finite(signals.stable_error_rate), _finite(signals.candidate_error_rate)
    increase = None if cand_err is None else cand_err - (stable_err or 0.0)
    out.append(Check("error_rate_increase", increase, limits.max_error_rate_increase,
                     increase is None or increase <= limits.max_error_rate_increase))  # fmt: skip
    out.append(latency_check(signals, limits.max_p99_latency_ratio))
    agreement = _finite(signals.agreement)
    out.append(Check("agreement", agreement, limits.min_agreement,
                     agreement is None or agreement >= limits.min_agreement))  # fmt: skip
    shift = total_variation(signals.stable_classes, signals.candidate_classes)
    out.append(Check("predicted_class_shift", shift, limits.max_predicted_class_shift,
                     shift is None or shift <= limits.max_predicted_class_shift))  # fmt: skip
    stable_conf, cand_conf = _finite(signals.stable_confidence), _finite(signals.candidate_confidence)
    drop = stable_conf - cand_conf if stable_conf is not None and cand_conf is not None else None
    out.append(Check("confidence_drop", drop, limits.max_confidence_drop,
                     drop is None or drop <= limits.max_confidence_drop))  # fmt: skip
    return tuple(out)


def judge(strategy: Strategy, stage: int, signals: Signals, elapsed_seconds: float) -> Analysis:
    """The verdict on ``stage`` (-1 shadow, i canary step i) after ``elapsed_seconds`` in it.

    - a broken threshold with at least ``minRequests`` requests: abort;
    - fewer requests, or a canary step younger than ``stepSeconds``: insufficient, until the
      stage's deadline, where ``onInsufficientData`` decides (wait keeps it insufficient);
    - every threshold kept with enough requests and time: continue (promote after the last step).

    A window whose numbers contradict each other (``signals.inconsistent``) is insufficient
    whatever they say: the next look reads another window.
    """
    name = strategy.stage_name(stage)
    min_requests, min_seconds, deadline = strategy.stage_limits(stage)
    results = checks(signals, strategy.thresholds)
    requests = max(float(signals.requests or 0.0), 0.0)
    if signals.inconsistent:
        why = f"window not judged, its numbers disagree: {signals.inconsistent}"
        return Analysis(Verdict.INSUFFICIENT, name, why, requests, results)
    passed = Verdict.PROMOTE if strategy.is_last(stage) else Verdict.CONTINUE
    enough = requests >= min_requests
    failed = [check for check in results if not check.ok]
    if enough and failed:
        why = ", ".join(check.describe() for check in failed)
        return Analysis(Verdict.ABORT, name, why, requests, results)
    if enough and elapsed_seconds >= min_seconds:
        return Analysis(passed, name, "every threshold kept", requests, results)
    if elapsed_seconds < deadline:
        if enough:
            why = f"{elapsed_seconds:.0f}s of the step's {min_seconds:g}s"
        else:
            why = f"{requests:.0f}/{min_requests} requests after {elapsed_seconds:.0f}s"
        return Analysis(Verdict.INSUFFICIENT, name, why, requests, results)
    why = f"only {requests:.0f}/{min_requests} requests after {elapsed_seconds:.0f}s"
    mode = strategy.on_insufficient_data
    if mode == OnInsufficientData.ABORT:
        return Analysis(Verdict.ABORT, name, f"{why}, onInsufficientData: abort", requests, results)
    if mode == OnInsufficientData.PROMOTE and not failed:
        return Analysis(passed, name, f"{why}, onInsufficientData: promote", requests, results)
    if mode == OnInsufficientData.PROMOTE:
        # A broken threshold on few requests is not enough to abort, nor to go on blindly.
        broken = ", ".join(check.describe() for check in failed)
        return Analysis(Verdict.INSUFFICIENT, name, f"{why}, waiting: {broken}", requests, results)
    return Analysis(Verdict.INSUFFICIENT, name, f"{why}, onInsufficientData: wait", requests, results)
