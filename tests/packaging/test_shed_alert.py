"""The PrometheusRule alert on load shedding: promtool's rule unit tests fire RakutenApiShedding
when admission control refuses more than 1% of prediction requests for 10 minutes, and keep it
quiet on a pod that refuses none or only a short burst."""

from __future__ import annotations

import yaml

from tests.packaging.chart_support import NAMESPACE
from tests.packaging.test_monitoring_objects import (  # noqa: F401 (fixtures)
    API,
    promtool,
    rule_doc,
    rules_file,
)


def _series(pod: str, served_per_min: int, shed: str) -> list[dict]:
    """``served_per_min`` answered /predict requests a minute and the pod's shed counter values."""
    sel = f'namespace="{NAMESPACE}", service="{API}", pod="{pod}"'
    return [
        {
            "series": f'rakuten_http_requests_total{{{sel}, route="/predict", method="POST", status="200"}}',
            "values": f"0+{served_per_min}x40",
        },
        # a refused request is also a 503 of its route
        {
            "series": f'rakuten_http_requests_total{{{sel}, route="/predict", method="POST", status="503"}}',
            "values": shed,
        },
        {"series": f'rakuten_http_requests_shed_total{{{sel}, route="/predict"}}', "values": shed},
        {"series": f'rakuten_http_requests_shed_total{{{sel}, route="/predict/batch"}}', "values": "0x40"},
    ]


def _alert_test(name: str, series: list[dict], expected: list[tuple[str, list]]) -> dict:
    return {
        "name": name,
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": "RakutenApiShedding", "exp_alerts": alerts}
            for at, alerts in expected
        ],
    }


def test_shedding_alert_fires_on_sustained_refusals_only(rules_file, tmp_path):  # noqa: F811 (the fixture)
    firing = [
        {
            "exp_labels": {"severity": "warning"},
            "exp_annotations": {
                "summary": "The API refuses more than 1% of prediction requests (overload)",
                "description": "4.762% of prediction requests were refused with 503 by admission control "
                "over the last 5 minutes: the pods are at their in-flight limit. Add replicas (check the "
                "HPA's maxReplicas and CPU) or find the client sending the surge.",
            },
        }
    ]
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            # 1,000 served and 50 refused a minute: 50 / 1,050 of the prediction requests
            _alert_test(
                "sustained refusals",
                _series("api-a", 1000, "0+50x40"),
                [("8m", []), ("20m", firing)],  # for: 10m
            ),
            _alert_test("no refusal", _series("api-a", 1000, "0x40"), [("30m", [])]),
            # a 3-minute burst of refusals, then none: never 10 minutes above the ratio
            _alert_test(
                "short burst", _series("api-a", 1000, "0x5 0+300x3 900x30"), [("9m", []), ("20m", [])]
            ),
        ],
    }
    path = tmp_path / "shed_rules_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = promtool("test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
