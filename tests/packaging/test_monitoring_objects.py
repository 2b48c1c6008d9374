"""ServiceMonitor, PrometheusRule and the Grafana dashboard: promtool accepts the rules and
fires them on the series a failing API produces; the dashboard is valid and uses only the
metric names the API exports (docs/architecture.md, and the live /metrics when serving exists)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.packaging.chart_support import CHART, NAMESPACE, RELEASE, by_kind, tool_or_skip
from tests.support import REPO

API = f"{RELEASE}-rakuten-mlops-api"
DASHBOARD = CHART / "files" / "dashboards" / "rakuten-mlops.json"
METRIC = re.compile(r"\b(rakuten_[a-z0-9_]+)\b")
SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
}


def architecture_metrics() -> dict[str, str]:
    """name -> type from the metrics table of docs/architecture.md."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Prometheus metrics exported by the API", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(rakuten_[a-z0-9_]+)` \| (counter|gauge|histogram)", section, re.MULTILINE)
    assert len(rows) >= 10, "the metrics table of docs/architecture.md was not found"
    return dict(rows)


def sample_names(families: dict[str, str]) -> set[str]:
    return {name + suffix for name, kind in families.items() for suffix in SUFFIXES[kind]}


def live_metric_families(settings) -> dict[str, str]:
    """name -> type from the API's own /metrics (a real app, scraped over ASGI)."""
    app_module = pytest.importorskip(
        "rakuten_mlops.serving.app",
        reason="rakuten_mlops.serving is not there yet: compared with the docs only",
    )
    from fastapi.testclient import TestClient

    from rakuten_mlops.db.engine import upgrade

    upgrade(settings.database_url)  # drift and live-F1 gauges are read from the data database
    app = app_module.create_app(settings, prediction_log=False)
    with TestClient(app) as client:
        client.get("/health")
        client.post(
            "/predict", json={"designation": "Manette sans fil"}
        )  # 503 without a model: still counted
        rsp = client.get("/metrics")
    assert rsp.status_code == 200
    return dict(re.findall(r"^# TYPE (rakuten_[a-z0-9_]+) (\w+)$", rsp.text, re.MULTILINE))


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def rule_doc(render) -> dict:
    return by_kind(render.docs(), "PrometheusRule")[0]


def rule_exprs(rule_doc) -> list[str]:
    return [r["expr"] for g in rule_doc["spec"]["groups"] for r in g["rules"]]


def used_metrics(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


# ------------------------------------------------------------------ names


def test_dashboard_and_rules_use_only_documented_metrics(rule_doc):
    exported = sample_names(architecture_metrics())
    used = used_metrics(dashboard_exprs() + rule_exprs(rule_doc))
    assert used, "no rakuten_* metric found in the dashboard and rules"
    assert used <= exported, f"not in docs/architecture.md: {sorted(used - exported)}"


def test_dashboard_and_rules_use_only_metrics_the_api_exports(rule_doc, settings):
    families = live_metric_families(settings)
    exported = sample_names(families)
    used = used_metrics(dashboard_exprs() + rule_exprs(rule_doc))
    assert used <= exported, f"used but not in the API's /metrics: {sorted(used - exported)}"
    assert set(architecture_metrics()) <= set(families), "the API and docs/architecture.md disagree"


def test_dashboard_covers_what_operators_watch():
    used = used_metrics(dashboard_exprs())
    exprs = "\n".join(dashboard_exprs())
    for metric in (
        "rakuten_http_request_duration_seconds_bucket",
        "rakuten_http_requests_total",
        "rakuten_predictions_total",
        "rakuten_prediction_confidence_bucket",
        "rakuten_drift_score",
        "rakuten_model_info",
        "rakuten_model_live_f1",
    ):
        assert metric in used, metric
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, " in exprs
    assert 'status=~"5.."' in exprs


# ------------------------------------------------------------------ dashboard


def test_dashboard_json_is_a_valid_grafana_dashboard():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "namespace", "service"} <= variables
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            for var in re.findall(r"\$(\w+)", expr):
                assert var in variables or var.startswith("__"), (
                    f"unknown variable ${var} in {panel['title']}"
                )


def test_dashboard_ships_in_a_configmap_for_the_grafana_sidecar(render):
    cms = [c for c in by_kind(render.docs(), "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert len(cms) == 1
    assert cms[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cms[0]["data"]["rakuten-mlops.json"]) == json.loads(DASHBOARD.read_text())


def test_servicemonitor_scrapes_the_api_service_and_matches_the_prometheus_release(render):
    docs = render.docs()
    sm = by_kind(docs, "ServiceMonitor")[0]
    svc = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == API)
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    custom = by_kind(
        render.docs("default", "1.31", ("monitoring.serviceMonitor.labels.release=prom",)), "ServiceMonitor"
    )
    assert custom[0]["metadata"]["labels"]["release"] == "prom"


# ------------------------------------------------------------------ rules under promtool


def test_rules_cover_the_issue_alerts(rule_doc):
    alerts = {r["alert"] for g in rule_doc["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "RakutenApiHighLatencyP99",
        "RakutenApiHighErrorRate",
        "RakutenDriftSeverityHigh",
        "RakutenModelNotLoaded",
        "RakutenPredictionLogDrops",
    } <= alerts


@pytest.fixture(scope="module")
def rules_file(rule_doc, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_doc["spec"], sort_keys=False))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = tool_or_skip("promtool", "apt-get install --no-install-recommends prometheus")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules(rules_file):
    proc = promtool("check", "rules", str(rules_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 8 rules found" in proc.stdout


def test_alerts_fire_on_a_failing_api_and_stay_quiet_on_a_healthy_one(rules_file, tmp_path):
    """promtool's rule unit tests: synthetic series in, expected alerts out."""
    sel = f'namespace="{NAMESPACE}", service="{API}"'
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "broken API",
                "interval": "1m",
                "input_series": [
                    {"series": f'rakuten_model_loaded{{{sel}, pod="api-a"}}', "values": "0x20"},
                    {"series": f'rakuten_model_loaded{{{sel}, pod="api-b"}}', "values": "1x20"},
                    {"series": f'rakuten_drift_severity{{{sel}, pod="api-a"}}', "values": "3x30"},
                    {
                        "series": f'rakuten_http_requests_total{{{sel}, route="/predict", method="POST", status="500"}}',
                        "values": "0+1x20",
                    },
                    {
                        "series": f'rakuten_http_requests_total{{{sel}, route="/predict", method="POST", status="200"}}',
                        "values": "0+3x20",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "RakutenModelNotLoaded",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "pod": "api-a"},
                                "exp_annotations": {
                                    "summary": "An API pod has no model loaded",
                                    "description": "Pod api-a reports rakuten_model_loaded=0: it is not ready and serves nothing. Check the production alias in MLflow.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "RakutenDriftSeverityHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {
                                    "summary": "Input drift severity is high",
                                    "description": "The last drift check rated the drift of live inputs as high. A retraining decision is due (rakuten-mlops decide).",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "RakutenApiHighErrorRate",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical"},
                                "exp_annotations": {
                                    "summary": "More than 5% of API requests fail",
                                    "description": "25% of requests answered 5xx over the last 5 minutes (not counting the requests refused by admission control).",
                                },
                            }
                        ],
                    },
                ],
            },
            {
                "name": "healthy API",
                "interval": "1m",
                "input_series": [
                    {"series": f'rakuten_model_loaded{{{sel}, pod="api-a"}}', "values": "1x20"},
                    {"series": f'rakuten_drift_severity{{{sel}, pod="api-a"}}', "values": "1x20"},
                    {
                        "series": f'rakuten_prediction_log_dropped_total{{{sel}, pod="api-a"}}',
                        "values": "0x20",
                    },
                    {
                        "series": f'rakuten_http_requests_total{{{sel}, route="/predict", method="POST", status="200"}}',
                        "values": "0+5x20",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "15m", "alertname": name, "exp_alerts": []}
                    for name in (
                        "RakutenModelNotLoaded",
                        "RakutenDriftSeverityHigh",
                        "RakutenApiHighErrorRate",
                        "RakutenPredictionLogDrops",
                    )
                ],
            },
        ],
    }
    path = tmp_path / "rules_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = promtool("test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_refusals_of_admission_control_are_shedding_not_errors(rules_file, tmp_path):
    """The same 503s a minute, refused by admission control or failed: only the failures count
    as errors (the refusals fire RakutenApiShedding), and failures among refusals still do."""
    sel = f'namespace="{NAMESPACE}", service="{API}", pod="api-a"'

    def api(shed_per_min: int) -> list[dict]:
        # 100 served and 50 answered 503 a minute, of which ``shed_per_min`` refused
        return [
            {
                "series": f'rakuten_http_requests_total{{{sel}, route="/predict", method="POST", status="200"}}',
                "values": "0+100x40",
            },
            {
                "series": f'rakuten_http_requests_total{{{sel}, route="/predict", method="POST", status="503"}}',
                "values": "0+50x40",
            },
            {
                "series": f'rakuten_http_requests_shed_total{{{sel}, route="/predict"}}',
                "values": f"0+{shed_per_min}x40",
            },
        ]

    def expect(name: str, series: list[dict], error_rate: str | None, shedding: str | None) -> dict:
        def alerts(summary: str, description: str | None, severity: str) -> list[dict]:
            if description is None:
                return []
            return [
                {
                    "exp_labels": {"severity": severity},
                    "exp_annotations": {"summary": summary, "description": description},
                }
            ]

        return {
            "name": name,
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {
                    "eval_time": "20m",
                    "alertname": "RakutenApiHighErrorRate",
                    "exp_alerts": alerts(
                        "More than 5% of API requests fail",
                        error_rate
                        and f"{error_rate} of requests answered 5xx over the last 5 minutes"
                        " (not counting the requests refused by admission control).",
                        "critical",
                    ),
                },
                {
                    "eval_time": "20m",
                    "alertname": "RakutenApiShedding",
                    "exp_alerts": alerts(
                        "The API refuses more than 1% of prediction requests (overload)",
                        shedding
                        and f"{shedding} of prediction requests were refused with 503 by admission"
                        " control over the last 5 minutes: the pods are at their in-flight limit. Add"
                        " replicas (check the HPA's maxReplicas and CPU) or find the client sending the"
                        " surge.",
                        "warning",
                    ),
                },
            ],
        }

    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            expect("every 503 a refusal", api(50), None, "33.33%"),
            # 10 failures a minute among the 110 requests not refused
            expect("refusals and failures", api(40), "9.091%", "26.67%"),
            expect("every 503 a failure", api(0), "33.33%", None),
        ],
    }
    path = tmp_path / "shed_vs_errors_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = promtool("test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
