"""Prometheus adapter of the operator: the per-version signals of a progressive rollout.

The API pods export, per model version, prediction requests and their latency
(``rakuten_model_requests_total``, ``rakuten_model_request_duration_seconds``) and, on the stable
pods that shadow a candidate, the comparison on the sampled requests (``rakuten_shadow_*``).
:func:`queries` builds the PromQL of one window (pure, so the Events can show it) and
:meth:`Prometheus.signals` runs it and turns the results into :class:`analysis.Signals`.

The counters of one window are read in a single query that returns their raw samples, and their
growth is the sum of each series' rises (:func:`rakuten_mlops.monitoring.counters.counted`, the
control room's reading too), for two reasons:

- one query reads one snapshot of the TSDB: numerator and denominator of a ratio (agreements and
  scored samples, errors and requests) come from the same scrapes. Queries run one after the other
  each see their own window, shifted by the time between them and by any scrape committed in
  between; the shadow's counters grow by whole scored batches, so two windows a scrape apart can
  differ by a batch;
- a counter that drops within a series (the container restarted in the same pod, same
  ``instance``) counts again from 0. ``max_over_time - min_over_time`` would span the old
  process's highest value and the new one's lowest, and ``increase()`` extrapolates to the
  window's edges: the sum of each series' rises is exact, whatever pods come, go or restart
  during the window.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from rakuten_mlops.monitoring.counters import counted as growth
from rakuten_operator.analysis import Signals

LATENCY_BUCKETS = "rakuten_model_request_duration_seconds_bucket"

#: A window shorter than this would hold fewer than two scrapes of a usual 15 s interval... or of
#: the tests' 1 s one: increase() needs two samples in the window.
MIN_WINDOW_SECONDS = 5


class PrometheusUnavailable(RuntimeError):
    """No usable answer from Prometheus (unreachable, an HTTP error, a body that is not a Prometheus
    API answer: an auth proxy, a wrong route prefix, another server): the analysis cannot be taken now."""


def window(seconds: float) -> str:
    return f"{max(MIN_WINDOW_SECONDS, math.ceil(seconds))}s"


#: The counters the analysis reads (a histogram's buckets, ``_sum`` and ``_count`` are counters too).
COUNTERS = (
    LATENCY_BUCKETS,
    "rakuten_model_requests_total",
    "rakuten_shadow_agreements_total",
    "rakuten_shadow_confidence_count",
    "rakuten_shadow_confidence_sum",
    "rakuten_shadow_predictions_total",
    "rakuten_shadow_samples_total",
)

Series = tuple[Mapping[str, str], Sequence[float]]


def queries(namespace: str, stable: str, candidate: str, seconds: float) -> dict[str, str]:
    """The PromQL of one analysis window (the last ``seconds``), by name.

    ``counters`` returns the raw samples of every counter series of both versions in the window
    (scoped by ``namespace``, the pods' namespace label as the ServiceMonitor sets it), the
    latency histograms' buckets among them; :func:`counter_results` turns them into the signals'
    numbers, and the latency check computes its quantiles from the buckets' growth
    (:func:`rakuten_operator.analysis.histogram_quantile`, PromQL's ``histogram_quantile``).
    """
    w = window(seconds)
    names = "|".join(COUNTERS)
    versions = "|".join(re.escape(version) for version in (stable, candidate))
    counters = f'{{__name__=~"{names}", namespace="{namespace}", model_version=~"{versions}"}}[{w}]'
    return {"counters": counters}


def _total(series: Iterable[Series], metric: str, **labels: str) -> float | None:
    """The growth of the ``metric`` series with ``labels``, summed; None when there is none."""
    found = [
        growth(values)
        for found_labels, values in series
        if found_labels.get("__name__") == metric and all(found_labels.get(k) == v for k, v in labels.items())
    ]
    return sum(found) if found else None


def _classes(series: Iterable[Series], version: str, role: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, values in series:
        if (labels.get("__name__"), labels.get("model_version"), labels.get("role")) == (
            "rakuten_shadow_predictions_total", version, role,
        ):  # fmt: skip
            code = labels.get("prdtypecode", "")
            out[code] = out.get(code, 0.0) + growth(values)
    return out


def latency_histogram(series: Iterable[Series], version: str) -> dict[float, float]:
    """The latency buckets of ``version``'s requests in the window: growth by upper bound, summed
    over its series (pods), as ``sum by (le) (increase(...))`` without the extrapolation."""
    out: dict[float, float] = {}
    for labels, values in series:
        if labels.get("__name__") == LATENCY_BUCKETS and labels.get("model_version") == version:
            bound = float(labels.get("le", "nan"))  # "+Inf" parses to inf
            if not math.isnan(bound):
                out[bound] = out.get(bound, 0.0) + growth(values)
    return out


def counter_results(series: Sequence[Series], stable: str, candidate: str) -> dict[str, Any]:
    """The numbers of one window from the raw samples of its counter series, by signal name."""
    return {
        "shadow_scored": _total(series, "rakuten_shadow_samples_total", model_version=candidate, result="scored"),
        "shadow_failed": _total(series, "rakuten_shadow_samples_total", model_version=candidate, result="failed"),
        "shadow_agreements": _total(series, "rakuten_shadow_agreements_total", model_version=candidate),
        "stable_classes": _classes(series, stable, "stable"),
        "candidate_classes": _classes(series, candidate, "candidate"),
        "stable_confidence_sum": _total(series, "rakuten_shadow_confidence_sum", model_version=stable, role="stable"),
        "stable_confidence_count": _total(
            series, "rakuten_shadow_confidence_count", model_version=stable, role="stable"
        ),
        "candidate_confidence_sum": _total(
            series, "rakuten_shadow_confidence_sum", model_version=candidate, role="candidate"
        ),
        "candidate_confidence_count": _total(
            series, "rakuten_shadow_confidence_count", model_version=candidate, role="candidate"
        ),
        "stable_requests": _total(series, "rakuten_model_requests_total", model_version=stable),
        "stable_errors": _total(series, "rakuten_model_requests_total", model_version=stable, outcome="error"),
        "candidate_requests": _total(series, "rakuten_model_requests_total", model_version=candidate),
        "candidate_errors": _total(
            series, "rakuten_model_requests_total", model_version=candidate, outcome="error"
        ),
        "stable_latency": latency_histogram(series, stable),
        "candidate_latency": latency_histogram(series, candidate),
    }  # fmt: skip


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def to_signals(results: dict[str, Any], canary: bool) -> Signals:
    """Signals from the query results; the shadow counts sampled requests, a canary step its requests.

    In the shadow the candidate answers nobody: its error rate is the share of samples it failed
    on and latency is not judged (the candidate's time on the scorer thread is not comparable with
    the served requests'). In a canary step both versions answer real requests.
    """
    scored = results.get("shadow_scored") or 0.0
    failed = results.get("shadow_failed") or 0.0
    stable_classes = results.get("stable_classes") or {}
    candidate_classes = results.get("candidate_classes") or {}
    agreements = results.get("shadow_agreements")
    common = dict(
        inconsistent=(
            f"{agreements:g} agreements counted on {scored:g} scored samples"
            if agreements is not None and agreements > scored
            else ""
        ),
        agreement=_ratio(agreements, scored),
        stable_classes=stable_classes,
        candidate_classes=candidate_classes,
        stable_confidence=_ratio(
            results.get("stable_confidence_sum"), results.get("stable_confidence_count")
        ),
        candidate_confidence=_ratio(
            results.get("candidate_confidence_sum"), results.get("candidate_confidence_count")
        ),
    )
    if not canary:
        return Signals(
            requests=scored + failed,  # a candidate that fails every sample is judged on its errors
            stable_error_rate=_ratio(results.get("stable_errors"), results.get("stable_requests")),
            candidate_error_rate=_ratio(failed, scored + failed),
            **common,
        )
    return Signals(
        requests=results.get("candidate_requests") or 0.0,
        stable_error_rate=_ratio(results.get("stable_errors"), results.get("stable_requests")),
        candidate_error_rate=_ratio(results.get("candidate_errors"), results.get("candidate_requests")),
        stable_latency=results.get("stable_latency") or {},
        candidate_latency=results.get("candidate_latency") or {},
        **common,
    )


@dataclass
class Prometheus:
    """Instant queries against one Prometheus (``/api/v1/query``)."""

    url: str
    timeout: float = 5.0

    def _get(self, path: str, **params: str) -> httpx.Response:
        try:
            rsp = httpx.get(f"{self.url.rstrip('/')}{path}", params=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise PrometheusUnavailable(
                f"Prometheus at {self.url} unreachable: {exc.__class__.__name__}: {exc}"
            ) from exc
        if rsp.status_code >= 500:
            raise PrometheusUnavailable(f"Prometheus at {self.url} answered HTTP {rsp.status_code}")
        return rsp

    def check(self) -> None:
        """Raise PrometheusUnavailable unless Prometheus answers a query."""
        self.query("vector(1)")

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of each series of an instant query (at ``at``, a Unix time, or now);
        NaN values are left out."""
        data = self._data(expr, at)
        if data["resultType"] == "scalar":
            rows = [({}, data["result"][1])]
        else:
            rows = [(item["metric"], item["value"][1]) for item in data["result"]]
        out = []
        for labels, raw in rows:
            value = float(raw)
            if not math.isnan(value):
                out.append((labels, value))
        return out

    def samples(self, expr: str, at: float | None = None) -> list[Series]:
        """(labels, values oldest first) of each series of a range selector (``metric[5m]``)."""
        data = self._data(expr, at)
        if data["resultType"] != "matrix":
            raise ValueError(f"{expr!r} is not a range selector (got a {data['resultType']})")
        return [(item["metric"], [float(value) for _, value in item["values"]]) for item in data["result"]]

    def _data(self, expr: str, at: float | None) -> dict[str, Any]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        rsp = self._get("/api/v1/query", **params)
        try:
            body = rsp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        data = body.get("data")
        if rsp.status_code != 200 or body.get("status") != "success" or not isinstance(data, dict):
            error = body.get("error")
            raise PrometheusUnavailable(
                f"Prometheus at {self.url} did not answer {expr[:80]!r}: HTTP {rsp.status_code}"
                f" {error or ' '.join(rsp.text[:200].split())}"
            )
        return data

    def scalar(self, expr: str, at: float | None = None) -> float | None:
        rows = self.query(expr, at)
        return rows[0][1] if rows else None

    def signals(
        self, namespace: str, stable: str, candidate: str, seconds: float, *, canary: bool
    ) -> tuple[Signals, dict[str, Any]]:
        """Run :func:`queries` for the window ending now; returns the signals and every number by name.

        Every number, the latency buckets included, comes from one query (one snapshot).
        """
        exprs = queries(namespace, stable, candidate, seconds)
        results = counter_results(self.samples(exprs["counters"], time.time()), stable, candidate)
        return to_signals(results, canary), results
