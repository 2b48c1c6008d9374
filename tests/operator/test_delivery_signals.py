"""The operator's Prometheus adapter against a real Prometheus scraping real API processes.

A stable API process pinned to version 1 shadows the alias's version 2 (a model that predicts one
class for everything, tagged as in shadow beside version 1) on every request; a second process pinned to version 2 plays the canary.
Real MLflow, real Prometheus (1 s scrapes), real ``rakuten-mlops serve``; no Kubernetes is needed.
"""

from __future__ import annotations

import math
import time

import httpx
import pytest

from rakuten_mlops.registry import SHADOW_TAG
from rakuten_operator.analysis import Strategy, Verdict, judge, latency_check, latency_quantile
from rakuten_operator.prometheus import Prometheus, PrometheusUnavailable, queries
from tests.operator.delivery_harness import PrometheusServer, api_env, register
from tests.serving.factories import REALISTIC_PRODUCTS, ApiProcess
from tests.support import free_port, wait_until

pytestmark = pytest.mark.slow
NAMESPACE = "signals"


def scraped(prom: Prometheus, expr: str, expected: float, timeout: float = 30) -> None:
    wait_until(
        lambda: prom.scalar(expr) == expected, timeout, 0.3, f"{expr} == {expected} (now {prom.scalar(expr)})"
    )


def exported_buckets(url: str, version: str) -> dict[float, float]:
    """The latency buckets of ``version`` on an API process's ``/metrics``, by upper bound."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    return {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rakuten_model_request_duration_seconds_bucket"
        and sample.labels.get("model_version") == version
    }


def test_shadow_and_canary_signals_per_version(mlflow_server, delivery_models, tmp_path):
    model = register(mlflow_server.uri, delivery_models, ["stable", "one_class"])
    env = api_env(mlflow_server.uri, model, tmp_path / "home", sample_rate=1.0)
    stable = ApiProcess({**env, "RAKUTEN_MODEL_VERSION": "1"}, tmp_path / "stable.log").start()
    canary = ApiProcess({**env, "RAKUTEN_MODEL_VERSION": "2"}, tmp_path / "canary.log").start()
    server = PrometheusServer(tmp_path / "prometheus", free_port()).start()
    try:
        server.set_targets(
            [
                {"targets": [f"127.0.0.1:{p.port}"], "labels": {"namespace": NAMESPACE}}
                for p in (stable, canary)
            ]
        )
        prom = Prometheus(server.url)
        # what the operator does when it judges version 2 in shadow beside version 1
        mlflow_server.client().set_model_version_tag(model, "2", SHADOW_TAG, "1")
        mlflow_server.client().set_registered_model_alias(model, "production", "2")
        wait_until(
            lambda: 'rakuten_shadow_candidate_info{model_version="2"} 1.0' in httpx.get(f"{stable.url}/metrics").text,
            30, 0.2, "the stable process to load version 2 beside version 1",
        )  # fmt: skip
        ns = f'namespace="{NAMESPACE}"'
        # the candidate's series exist from 0 before any sample: increase() counts the first ones
        scraped(prom, f'sum(rakuten_shadow_samples_total{{{ns}, model_version="2", result="scored"}})', 0)
        scraped(prom, f'sum(rakuten_model_requests_total{{{ns}, model_version="2"}})', 0)
        started = time.monotonic()
        with httpx.Client(timeout=10) as client:
            for i in range(60):
                rsp = client.post(
                    f"{stable.url}/predict", json=REALISTIC_PRODUCTS[i % len(REALISTIC_PRODUCTS)]
                )
                assert rsp.status_code == 200 and rsp.json()["model_version"] == "1", "answers stay version 1"
            for i in range(30):
                rsp = client.post(
                    f"{canary.url}/predict", json=REALISTIC_PRODUCTS[i % len(REALISTIC_PRODUCTS)]
                )
                assert rsp.json()["model_version"] == "2"
        scraped(prom, f'sum(rakuten_shadow_samples_total{{{ns}, model_version="2", result="scored"}})', 60)
        scraped(prom, f'sum(rakuten_model_requests_total{{{ns}, model_version="2"}})', 30)
        scraped(prom, f'sum(rakuten_model_requests_total{{{ns}, model_version="1"}})', 60)
        seconds = time.monotonic() - started + 30  # covers all the traffic while the queries run

        shadow, results = prom.signals(NAMESPACE, "1", "2", seconds, canary=False)
        assert set(queries(NAMESPACE, "1", "2", seconds)) == {"counters"}, "one query, one snapshot"
        assert {"shadow_scored", "shadow_agreements", "stable_latency", "candidate_latency"} <= set(results)
        assert shadow.requests == 60
        predicted = {code: n for code, n in results["candidate_classes"].items() if n}
        assert list(predicted.values()) == [60], f"the candidate predicts one class: {predicted}"
        assert shadow.agreement < 0.5
        assert sum(shadow.stable_classes.values()) == pytest.approx(shadow.requests)
        assert shadow.candidate_error_rate == 0 and shadow.stable_error_rate == 0
        assert shadow.stable_confidence is not None and shadow.candidate_confidence is not None
        assert not shadow.stable_latency, "latency is judged in the canary, not the shadow"
        verdict = judge(Strategy(shadow_min_requests=40), -1, shadow, seconds)
        assert verdict.verdict == Verdict.ABORT
        assert {c.name for c in verdict.failed} >= {"agreement", "predicted_class_shift"}

        in_canary, _ = prom.signals(NAMESPACE, "1", "2", seconds, canary=True)
        assert in_canary.requests == 30
        assert in_canary.candidate_error_rate == 0 and in_canary.stable_error_rate == 0
        # the buckets of each version's requests, as the processes count them (every request in the window)
        assert in_canary.stable_latency[math.inf] == 60 and in_canary.candidate_latency[math.inf] == 30
        for process, version, buckets in (
            (stable, "1", in_canary.stable_latency),
            (canary, "2", in_canary.candidate_latency),
        ):
            assert exported_buckets(process.url, version) == buckets
        check = latency_check(in_canary, 1.5)
        assert check.sample == 30 and check.quantile == latency_quantile(30)
        assert 0 < check.seconds[0] < 5 and 0 < check.seconds[1] < 5
        assert in_canary.agreement == shadow.agreement, "the stable pods keep shadowing during the canary"

        # Back on version 1: the candidate is dropped, nothing more is sampled.
        mlflow_server.client().set_registered_model_alias(model, "production", "1")
        wait_until(
            lambda: 'rakuten_shadow_candidate_info{model_version="2"}' not in httpx.get(f"{stable.url}/metrics").text,
            30, 0.2, "the stable process to drop the candidate",
        )  # fmt: skip
        httpx.post(f"{stable.url}/predict", json=REALISTIC_PRODUCTS[0])
        text = httpx.get(f"{stable.url}/metrics").text
        assert 'rakuten_shadow_samples_total{model_version="2",result="scored"} 60.0' in text
    finally:
        server.stop()
        for process in (stable, canary):
            process.terminate()
    with pytest.raises(PrometheusUnavailable, match="unreachable"):
        Prometheus(server.url, timeout=1).check()
