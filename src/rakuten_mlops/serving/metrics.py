"""Prometheus metrics of the API; the names are the contract of docs/architecture.md.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``serve --workers N``) every worker writes its values to
that directory and ``/metrics`` aggregates them, whichever worker answers the scrape.

``rakuten_model_info`` shows only the version(s) live workers serve now. prometheus-client cannot
remove a labelset in multiprocess mode (``Gauge.remove`` only warns: the worker's mmap file keeps
the sample), so there a worker sets the version it stopped
serving to 0 and ``/metrics`` drops the 0-valued samples after the ``livemax`` merge; the files of
live gauges of workers that died without ``mark_process_dead`` (killed, crashed) are removed at
scrape time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import math
import os
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from rakuten_mlops.monitoring import SEVERITY_LEVEL

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
)
#: The buckets of the per-version latency the operator judges a canary on (docs/operator.md, "The
#: latency check"): each bound at most 1.25x the one below up to 300 ms, so a quantile is known
#: within that factor from the bucket it falls in (LATENCY_BUCKETS' steps are up to 2.5x).
MODEL_LATENCY_BUCKETS = (
    0.001, 0.00125, 0.0015, 0.00175, 0.002, 0.0025, 0.003, 0.0035, 0.004, 0.005, 0.006, 0.007, 0.008,
    0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.07, 0.08,
    0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5,
)  # fmt: skip
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
LENGTH_BUCKETS = (10, 25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 10_000, 20_000)
MODEL_INFO = "rakuten_model_info"
SHADOW_INFO = "rakuten_shadow_candidate_info"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Cut:
    """A lock between groups of related metric updates and ``/metrics``.

    The shadow scorer counts a scored batch (samples, agreements, classes, confidences) under it
    and a scrape reads every value under it, so no scrape shows part of a batch: agreements
    counted and their samples not yet would make the analysis's ratio wrong at a window's edge.
    Across the workers of a multiprocess server it is also a lock on a file of their directory.
    """

    FILE = "metrics-cut.lock"  # not *.db: prometheus-client reads only those

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            path = multiprocess_dir()
            if path is None:
                yield
                return
            with open(os.path.join(path, self.FILE), "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)


#: Held by the shadow scorer while it counts a batch, and by ``/metrics`` while it reads the values.
CUT = _Cut()


class ApiMetrics:
    """The API's own metrics (one set per process)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "rakuten_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
        )
        self.latency = Histogram(
            "rakuten_http_request_duration_seconds",
            "HTTP request latency by route, method and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
        )
        self.shed = Counter(
            "rakuten_http_requests_shed",
            "Prediction requests refused with 503 because the worker was at its in-flight limit.",
            ["route"],
        )
        self.predictions = Counter(
            "rakuten_predictions_total", "Predictions served, by predicted prdtypecode.", ["prdtypecode"]
        )
        self.confidence = BatchHistogram(
            "rakuten_prediction_confidence", "Probability of the predicted class.", CONFIDENCE_BUCKETS
        )
        self.input_length = BatchHistogram(
            "rakuten_input_length_chars",
            "Characters of designation + description per product.",
            LENGTH_BUCKETS,
        )
        self.model_info = Gauge(
            MODEL_INFO,
            "1 for each model version a live worker of this API serves (one series per version).",
            ["name", "version", "alias"],
            multiprocess_mode="livemax",
        )
        self.model_loaded = Gauge(
            "rakuten_model_loaded",
            "1 when a model is loaded and /ready answers 200.",
            multiprocess_mode="livemin",
        )
        self.reloads = Counter("rakuten_model_reloads", "Model (re)load attempts by result.", ["result"])
        self.log_queue_depth = Gauge(
            "rakuten_prediction_log_queue_depth",
            "Predictions waiting to be written to the prediction log.",
            multiprocess_mode="livesum",
        )
        self.log_dropped = Counter(
            "rakuten_prediction_log_dropped", "Predictions not logged because the log queue was full."
        )
        self.log_written = Counter(
            "rakuten_prediction_log_written", "Predictions written to the prediction log."
        )
        # Per model version, bounded: a pod pinned by the operator serves one version, and its shadow
        # scores at most one candidate beside it (docs/operator.md).
        self.model_requests = Counter(
            "rakuten_model_requests_total",
            "Prediction requests by the model version that answered and outcome (error: status 5xx).",
            ["model_version", "outcome"],
        )
        self.model_latency = Histogram(
            "rakuten_model_request_duration_seconds",
            "Latency of prediction requests by the model version that answered.",
            ["model_version"],
            buckets=MODEL_LATENCY_BUCKETS,
        )
        self.shadow_samples = Counter(
            "rakuten_shadow_samples_total",
            "Live requests sampled for the shadow candidate, by candidate version and result "
            "(scored, failed: the candidate raised, dropped: the shadow queue was full).",
            ["model_version", "result"],
        )
        self.shadow_agreements = Counter(
            "rakuten_shadow_agreements_total",
            "Shadow samples where the candidate predicts the class the served version answered.",
            ["model_version"],
        )
        self.shadow_predictions = Counter(
            "rakuten_shadow_predictions_total",
            "Predicted classes on shadow samples, by the version that predicted and its role (stable, candidate).",
            ["model_version", "role", "prdtypecode"],
        )
        self.shadow_confidence = Histogram(
            "rakuten_shadow_confidence",
            "Probability of the predicted class on shadow samples, by version and role.",
            ["model_version", "role"],
            buckets=CONFIDENCE_BUCKETS,
        )
        self.shadow_latency = Histogram(
            "rakuten_shadow_duration_seconds",
            "The candidate's scoring time per shadow sample (a batch's time divided by its rows).",
            ["model_version"],
            buckets=MODEL_LATENCY_BUCKETS,
        )
        self.shadow_candidate = Gauge(
            SHADOW_INFO,
            "1 for the candidate version a live worker scores in shadow.",
            ["model_version"],
            multiprocess_mode="livemax",
        )
        self._model_children: dict[tuple[str, bool], tuple] = {}
        self.model_loaded.set(0)
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for route in ("/predict", "/predict/batch"):  # series from 0: increase() sees the first refusals
            self.shed.labels(route)

    def record_model_request(self, version: str, error: bool, seconds: float) -> None:
        """One prediction request answered by ``version`` (children cached: ``labels()`` locks)."""
        key = (version, error)
        children = self._model_children.get(key)
        if children is None:
            children = self._model_children[key] = (
                self.model_requests.labels(version, "error" if error else "ok"),
                self.model_latency.labels(version),
            )
        children[0].inc()
        children[1].observe(seconds)

    def record_swap(self, previous, current) -> None:
        """``current`` replaces ``previous``: its series is 1 and the previous one goes away."""
        labels = _info_labels(current)
        self.model_info.labels(*labels).set(1)
        for outcome in ("ok", "error"):  # series exist from 0: Prometheus' increase() sees the first requests
            self.model_requests.labels(current.version, outcome)
        self.model_latency.labels(current.version)
        if previous is not None and _info_labels(previous) != labels:
            if multiprocess_dir():  # remove() cannot reach the mmap file: 0, dropped by LiveCollector
                self.model_info.labels(*_info_labels(previous)).set(0)
            else:
                self.model_info.remove(*_info_labels(previous))
        self.model_loaded.set(1)

    def record_reload(self, success: bool) -> None:
        self.reloads.labels("success" if success else "failure").inc()


class BatchHistogram:
    """A histogram observed a request batch at a time, through prometheus-client's public API.

    ``Histogram.observe`` takes one value, so a batch of n products costs n calls, and with
    ``PROMETHEUS_MULTIPROC_DIR`` each call writes two mmap'ed values under a lock. Here a batch's
    values are counted per bucket first; then each bucket that got values, and the sum, get one
    ``Counter.inc``: at most ``len(buckets) + 2`` writes per batch, whatever its size. The counts
    live in one counter, ``<name>_parts`` (label ``part``: a bucket's upper bound, or ``sum``),
    which :func:`as_histograms` turns back into the histogram ``name`` when ``/metrics`` is
    rendered: cumulative ``_bucket{le=...}`` samples, ``_count`` and ``_sum``, what a
    ``Histogram`` with these buckets exposes. Values are non-negative (the sum is a counter).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ):
        bounds = sorted(float(b) for b in buckets)
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name, self.documentation = name, documentation
        self.bounds = bounds
        self._bounds = np.asarray(bounds)
        self.parts = Counter(
            f"{name}_parts",
            f"Per-bucket counts and sum of the histogram {name} (shown as that histogram).",
            ["part"],
            **({} if registry is None else {"registry": registry}),
        )
        self._buckets = [self.parts.labels(_le(bound)) for bound in bounds]  # series exist from 0
        self._sum = self.parts.labels("sum")
        _BATCHED[f"{name}_parts"] = self

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Sequence[float]) -> None:
        """Observe every value of ``values`` (NaN counts in the +Inf bucket, where numpy sorts it)."""
        n = len(values)
        if n == 1:  # a single prediction: the two writes Histogram.observe makes
            value = values[0]
            if value < 0:
                raise ValueError(f"{self.name} observes non-negative values only")
            self._buckets[bisect_left(self.bounds, value) if value == value else -1].inc(1)
            self._sum.inc(value)
            return
        if not n:
            return
        if n <= 16:  # a few values: bisect costs less than building arrays
            bounds, last = self.bounds, len(self.bounds) - 1
            counts: dict[int, int] = {}
            for value in values:
                i = bisect_left(bounds, value) if value == value else last
                counts[i] = counts.get(i, 0) + 1
            total, negative = math.fsum(values), min(values) < 0
        else:
            array = np.asarray(values, dtype=np.float64)
            per_bucket = np.bincount(np.searchsorted(self._bounds, array), minlength=len(self.bounds))
            counts = {int(i): int(per_bucket[i]) for i in np.flatnonzero(per_bucket)}
            total, negative = float(array.sum()), bool(array.min() < 0)
        if negative:  # before any write: a batch is counted whole or not at all
            raise ValueError(f"{self.name} observes non-negative values only")
        for i, count in counts.items():
            self._buckets[i].inc(count)
        self._sum.inc(total)

    def family(self, parts_family) -> HistogramMetricFamily:
        """The histogram from the ``_parts`` counter's family (summed over workers)."""
        values = {s.labels.get("part"): s.value for s in parts_family.samples if s.name.endswith("_total")}
        cumulative, buckets = 0.0, []
        for bound in self.bounds:
            cumulative += values.get(_le(bound), 0.0)
            buckets.append((_le(bound), cumulative))
        return HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=values.get("sum", 0.0)
        )


_BATCHED: dict[str, BatchHistogram] = {}


def _le(bound: float) -> str:
    """A bucket bound as prometheus-client writes ``le`` (Go's float formatting)."""
    return "+Inf" if bound == math.inf else repr(float(bound))


def as_histograms(families: Iterable) -> Iterable:
    """``families`` with each :class:`BatchHistogram`'s counter shown as its histogram."""
    for family in families:
        batched = _BATCHED.get(family.name)
        yield batched.family(family) if batched is not None else family


def _info_labels(model) -> tuple[str, str, str]:
    return model.name, model.version, model.alias or ""


@functools.cache
def api_metrics() -> ApiMetrics:
    """The process-wide metrics (created once: Prometheus names are global)."""
    return ApiMetrics()


class MonitoringCollector(Collector):
    """Drift and live-F1 gauges read from the data database, cached for ``ttl`` seconds.

    Only the process answering the scrape reads them, so workers do not multiply the queries.
    """

    def __init__(self, database_url: str, ttl: float = 15.0):
        self.database_url = database_url
        self.ttl = ttl
        self._cached: list = []
        self._cached_at = 0.0

    def collect(self) -> Iterable:
        now = time.monotonic()
        if now - self._cached_at > self.ttl:
            with contextlib.suppress(Exception):  # database down: keep the last values, never fail a scrape
                self._cached = self._read()
            self._cached_at = now
        return list(self._cached)

    def _read(self) -> list:
        from sqlalchemy import func, select

        from rakuten_mlops.db.engine import session_scope
        from rakuten_mlops.db.models import DriftReport, PerformanceEstimate
        from rakuten_mlops.monitoring.feedback import latest_realized

        score = GaugeMetricFamily(
            "rakuten_drift_score",
            "Drift test statistic of the latest drift report.",
            labels=["feature", "test"],
        )
        severity = GaugeMetricFamily(
            "rakuten_drift_severity", "Severity of the latest drift report (0 none, 1 low, 2 medium, 3 high)."
        )
        live_f1 = GaugeMetricFamily(
            "rakuten_model_live_f1",
            "Weighted F1 of a model version on its latest labels: a labelled batch or feedback labels.",
            labels=["version"],
        )
        estimated = {
            name: GaugeMetricFamily(f"rakuten_model_estimated_{name}", text, labels=["version"])
            for name, text in (
                (
                    "f1",
                    "Estimated weighted F1 of a model version over its latest estimate window (no labels).",
                ),
                ("f1_low", "Lower bound of the 90% interval of the estimated weighted F1."),
                ("f1_high", "Upper bound of the 90% interval of the estimated weighted F1."),
                ("trusted", "1 when the latest estimate passed its trust checks, else 0."),
            )
        }
        with session_scope(self.database_url) as session:
            report = session.scalars(select(DriftReport).order_by(DriftReport.id.desc()).limit(1)).first()
            evaluations = [(v, r.f1_weighted) for v, r in latest_realized(session).items()]
            newest = (
                select(PerformanceEstimate.model_version, func.max(PerformanceEstimate.id).label("id"))
                .group_by(PerformanceEstimate.model_version)
                .subquery()
            )
            estimates = session.execute(
                select(
                    PerformanceEstimate.model_version,
                    PerformanceEstimate.f1_weighted,
                    PerformanceEstimate.f1_weighted_low,
                    PerformanceEstimate.f1_weighted_high,
                    PerformanceEstimate.trusted,
                ).join(newest, PerformanceEstimate.id == newest.c.id)
            ).all()
            if report is not None:
                summary = report.summary or {}
                for test in summary.get("tests", []) or []:
                    try:
                        score.add_metric([str(test["feature"]), str(test["test"])], float(test["score"]))
                    except (KeyError, TypeError, ValueError):
                        continue
                level = summary.get("severity", report.severity)
                severity.add_metric([], float(SEVERITY_LEVEL.get(str(level).lower(), 0)))
        for version, f1 in evaluations:
            live_f1.add_metric([str(version)], float(f1))
        for version, f1, low, high, trusted in estimates:
            if f1 is None:
                continue  # an empty window estimates nothing
            for name, value in (("f1", f1), ("f1_low", low), ("f1_high", high), ("trusted", float(trusted))):
                if value is not None:
                    estimated[name].add_metric([str(version)], float(value))
        return [score, severity, live_f1, *estimated.values()]


def build_registry(database_url: str | None) -> CollectorRegistry:
    """The registry ``/metrics`` renders: this process's metrics, or all workers' in multiprocess mode."""
    from prometheus_client import REGISTRY

    api_metrics()
    path = multiprocess_dir()
    if path:
        registry = CollectorRegistry()
        registry.register(LiveCollector(path))
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    if database_url:
        registry.register(MonitoringCollector(database_url))
    return registry


class LiveCollector(Collector):
    """All workers' metrics (``MultiProcessCollector``) without what old versions and dead workers left.

    - ``rakuten_model_info`` and ``rakuten_shadow_candidate_info``: samples at 0 are versions no
      live worker serves (or shadows) any more.
    - live gauges (``livemax``, ``livemin``, ``livesum``) of a worker that is gone (killed, crashed,
      restarted by uvicorn) are removed as ``mark_process_dead`` would have on a clean exit.
    """

    def __init__(self, path: str):
        from prometheus_client import multiprocess

        self.path = path
        self._merged = multiprocess.MultiProcessCollector(None, path)

    def collect(self) -> Iterable:
        reap_dead_workers(self.path)
        with CUT.held():
            merged = list(self._merged.collect())
        for family in as_histograms(merged):
            if family.name in (MODEL_INFO, SHADOW_INFO):
                family.samples = [s for s in family.samples if s.value != 0]
            yield family


def reap_dead_workers(path: str) -> list[int]:
    """Remove the live-gauge files of processes that no longer exist; returns their pids.

    The directory belongs to one server (``serve`` makes a fresh one), so its pids are of this
    host's (or pod's) process namespace.
    """
    files: dict[int, list[str]] = {}
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _LIVE_GAUGE_FILE.fullmatch(os.path.basename(file))
        if match:
            files.setdefault(int(match.group(1)), []).append(file)
    dead = [pid for pid in files if not _process_exists(pid)]
    for pid in dead:
        for file in files[pid]:
            with contextlib.suppress(FileNotFoundError):  # another worker's scrape was faster
                os.remove(file)
    return dead


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


class _Forward(Collector):
    """Exposes the default registry's metrics inside another registry."""

    def __init__(self, source: CollectorRegistry):
        self.source = source

    def collect(self) -> Iterable:
        with CUT.held():
            families = list(self.source.collect())
        return as_histograms(families)


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead() -> None:
    """Drop this worker's live gauges from the multiprocess directory (on shutdown)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
