"""The PrometheusRule alert on the estimated F1: promtool's rule unit tests fire it on a trusted
estimate below the threshold, and keep it quiet on a good or an untrusted one."""

from __future__ import annotations

import pytest
import yaml

from tests.packaging.chart_support import NAMESPACE, by_kind
from tests.packaging.test_monitoring_objects import API, promtool


@pytest.fixture(scope="module")
def rules_file(render, tmp_path_factory):
    rule = by_kind(render.docs(), "PrometheusRule")[0]
    path = tmp_path_factory.mktemp("estimate-rules") / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


def _series(version: str, f1: float, trusted: int) -> list[dict]:
    sel = f'namespace="{NAMESPACE}", service="{API}", pod="api-a", version="{version}"'
    return [
        {"series": f"rakuten_model_estimated_f1{{{sel}}}", "values": f"{f1}x60"},
        {"series": f"rakuten_model_estimated_trusted{{{sel}}}", "values": f"{trusted}x60"},
    ]


def test_estimated_f1_alert_fires_only_on_a_trusted_low_estimate(rules_file, tmp_path):
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "trusted estimate below the threshold, another version fine, one untrusted",
                "interval": "1m",
                "input_series": _series("7", 0.612, 1) + _series("6", 0.83, 1) + _series("5", 0.41, 0),
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "RakutenEstimatedF1Low", "exp_alerts": []},  # for: 30m
                    {
                        "eval_time": "45m",
                        "alertname": "RakutenEstimatedF1Low",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "version": "7"},
                                "exp_annotations": {
                                    "summary": "Estimated weighted F1 of model version 7 is below 0.7",
                                    "description": "rakuten-mlops estimate puts the weighted F1 of version 7 at "
                                    "0.612 over its latest window, from the logged probabilities (no labels needed; "
                                    "the estimate passed its trust checks). A retraining decision is due "
                                    "(rakuten-mlops decide).",
                                },
                            }
                        ],
                    },
                ],
            },
        ],
    }
    path = tmp_path / "estimate_rules_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = promtool("test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
