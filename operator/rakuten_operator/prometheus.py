"""Prometheus adapter of the operator: the per-version signals of a progressive rollout.

The API pods export, per model version, prediction requests and their latency
(``rakuten_model_requests_total``, ``rakuten_model_request_duration_seconds``) and, on the stable
pods that shadow a candidate, the comparison on the sampled requests (``rakuten_shadow_*``).
:func:`queries` builds the PromQL of one window (pure, so the Events can show it) and
:meth:`Prometheus.signals` runs it and turns the results into :class:`analysis.Signals`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx

from rakuten_operator.analysis import Signals

#: A window shorter than this would hold fewer than two scrapes of a usual 15 s interval... or of
#: the tests' 1 s one: increase() needs two samples in the window.
MIN_WINDOW_SECONDS = 5


class PrometheusUnavailable(RuntimeError):
    """Prometheus did not answer (or answered 5xx): the analysis cannot be taken now."""


def _sel(namespace: str, **labels: str) -> str:
    pairs = {"namespace": namespace, **labels}
    return "{" + ", ".join(f'{key}="{value}"' for key, value in pairs.items()) + "}"


def window(seconds: float) -> str:
    return f"{max(MIN_WINDOW_SECONDS, math.ceil(seconds))}s"


def queries(namespace: str, stable: str, candidate: str, seconds: float) -> dict[str, str]:
    """The PromQL of one analysis window (the last ``seconds``), by signal name.

    Scoped by ``namespace`` (the pods' namespace label, as the ServiceMonitor sets it).
    """
    w = window(seconds)

    def total(metric: str, **labels: str) -> str:
        # growth of each counter series over the window, summed: exact for counters (increase()
        # would extrapolate to the window's edges); a series that appears in the window counts
        # from its first scrape, which is 0 for the series the API creates up front
        series = f"{metric}{_sel(namespace, **labels)}[{w}]"
        return f"sum(max_over_time({series}) - min_over_time({series}))"

    def p99(version: str) -> str:
        buckets = f"rakuten_model_request_duration_seconds_bucket{_sel(namespace, model_version=version)}"
        return f"histogram_quantile(0.99, sum by (le) (increase({buckets}[{w}])))"

    def classes(version: str, role: str) -> str:
        metric = f"rakuten_shadow_predictions_total{_sel(namespace, model_version=version, role=role)}"
        return f"sum by (prdtypecode) (max_over_time({metric}[{w}]) - min_over_time({metric}[{w}]))"

    return {
        "shadow_scored": total("rakuten_shadow_samples_total", model_version=candidate, result="scored"),
        "shadow_failed": total("rakuten_shadow_samples_total", model_version=candidate, result="failed"),
        "shadow_agreements": total("rakuten_shadow_agreements_total", model_version=candidate),
        "stable_classes": classes(stable, "stable"),
        "candidate_classes": classes(candidate, "candidate"),
        "stable_confidence_sum": total("rakuten_shadow_confidence_sum", model_version=stable, role="stable"),
        "stable_confidence_count": total("rakuten_shadow_confidence_count", model_version=stable, role="stable"),
        "candidate_confidence_sum": total("rakuten_shadow_confidence_sum", model_version=candidate, role="candidate"),
        "candidate_confidence_count": total(
            "rakuten_shadow_confidence_count", model_version=candidate, role="candidate"
        ),
        "stable_requests": total("rakuten_model_requests_total", model_version=stable),
        "stable_errors": total("rakuten_model_requests_total", model_version=stable, outcome="error"),
        "candidate_requests": total("rakuten_model_requests_total", model_version=candidate),
        "candidate_errors": total("rakuten_model_requests_total", model_version=candidate, outcome="error"),
        "stable_p99": p99(stable),
        "candidate_p99": p99(candidate),
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
    common = dict(
        agreement=_ratio(results.get("shadow_agreements"), scored),
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
            requests=scored,
            stable_error_rate=_ratio(results.get("stable_errors"), results.get("stable_requests")),
            candidate_error_rate=_ratio(failed, scored + failed),
            **common,
        )
    return Signals(
        requests=results.get("candidate_requests") or 0.0,
        stable_error_rate=_ratio(results.get("stable_errors"), results.get("stable_requests")),
        candidate_error_rate=_ratio(results.get("candidate_errors"), results.get("candidate_requests")),
        stable_p99=results.get("stable_p99"),
        candidate_p99=results.get("candidate_p99"),
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

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of each series of an instant query; NaN values are left out."""
        rsp = self._get("/api/v1/query", query=expr)
        body = rsp.json() if rsp.headers.get("content-type", "").startswith("application/json") else {}
        if rsp.status_code != 200 or body.get("status") != "success":
            raise ValueError(
                f"Prometheus refused {expr!r}: HTTP {rsp.status_code} {body.get('error', rsp.text[:200])}"
            )
        data = body["data"]
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

    def scalar(self, expr: str) -> float | None:
        rows = self.query(expr)
        return rows[0][1] if rows else None

    def signals(
        self, namespace: str, stable: str, candidate: str, seconds: float, *, canary: bool
    ) -> tuple[Signals, dict[str, Any]]:
        """Run :func:`queries` for the window; returns the signals and every raw result by name."""
        results: dict[str, Any] = {}
        for name, expr in queries(namespace, stable, candidate, seconds).items():
            if name.endswith("_classes"):
                results[name] = {labels.get("prdtypecode", ""): value for labels, value in self.query(expr)}
            else:
                results[name] = self.scalar(expr)
        return to_signals(results, canary), results
