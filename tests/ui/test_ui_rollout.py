"""The Training page's rollout panel: how it reads Prometheus answers, then the page itself with a
rollout in progress (real API processes, a real Prometheus, the ServedModel on the emulated
Kubernetes API) and without one; and the Grafana dashboard's rollout panels on the same Prometheus."""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest

from rakuten_mlops.ui.queries.training import ROLLOUT_QUERIES, VERSION_COLUMNS, rollout_frame, shadow_counts
from tests.support import REPO, wait_until
from tests.support.prometheus import instant_query
from tests.ui.apptest import main_text, metrics, open_app


def series(**by_version: float) -> list[dict]:
    return [{"labels": {"model_version": v}, "value": x} for v, x in by_version.items()]


def test_a_candidate_in_shadow_and_a_canary_show_as_a_rollout():
    frame = rollout_frame(
        {
            "shadowed": series(**{"7": 1.0}),
            "requests": series(**{"6": 9.0, "7": 1.0}),
            "agreements": series(**{"7": 45.0}),
            "scored": series(**{"7": 50.0}),
        }
    )
    rows = {r["version"]: r for r in frame.to_dict("records")}
    assert list(rows) == ["6", "7"]
    assert rows["7"]["traffic_share"] == pytest.approx(0.1) and rows["7"]["in_shadow"]
    assert rows["7"]["shadow_agreement"] == pytest.approx(0.9)
    assert not rows["6"]["in_shadow"] and pd.isna(rows["6"]["shadow_agreement"])


def test_one_version_and_no_shadow_is_no_rollout():
    assert rollout_frame({"requests": series(**{"6": 3.0})}).empty
    assert rollout_frame({}).empty
    assert set(ROLLOUT_QUERIES) == {"shadowed", "requests"}


def test_shadow_counts_sum_each_series_rises_across_restarts_and_pods():
    """The raw samples of one window: version 2's counters on two stable pods, one of which
    restarted (its counters from 0 again); what was counted is the sum of the rises."""

    def samples(name: str, values: list[float], pod: str, **labels: str) -> dict:
        return {"labels": {"__name__": name, "model_version": "2", "pod": pod, **labels}, "values": values}

    counts = shadow_counts(
        [
            samples("rakuten_shadow_samples_total", [0, 10, 30, 4, 9], "a", result="scored"),  # 30 + 9
            samples("rakuten_shadow_agreements_total", [0, 9, 27, 4, 8], "a"),  # 27 + 8
            samples("rakuten_shadow_samples_total", [100, 110], "b", result="scored"),
            samples("rakuten_shadow_agreements_total", [90, 100], "b"),
        ]
    )
    assert counts == {"agreements": series(**{"2": 45.0}), "scored": series(**{"2": 49.0})}
    assert rollout_frame({**counts, "shadowed": series(**{"2": 1.0})}).iloc[0]["shadow_agreement"] == 45 / 49


def test_an_agreement_never_shows_above_one():
    """A scrape between a shadow batch's two increments (agreements first) reads more agreements
    than samples scored; the panel shows 1, not more."""
    frame = rollout_frame(
        {
            "shadowed": series(**{"2": 1.0}),
            "agreements": series(**{"2": 51.0}),
            "scored": series(**{"2": 50.0}),
        }
    )
    assert frame.iloc[0]["shadow_agreement"] == 1.0


# --- the page, fed by real API processes, a real Prometheus and the (emulated) Kubernetes API ----


def canary_status(stable: str, candidate: str) -> dict:
    """The status the operator writes when a candidate enters its first canary step (through its
    own ``transition``; the stage fields as ``reconcile`` sets them)."""
    from datetime import UTC, datetime

    from rakuten_operator.analysis import Strategy
    from rakuten_operator.rollout import Phase, format_time, transition

    strategy = Strategy.from_spec({"canary": {"steps": [25, 50]}})
    now = datetime.now(UTC)
    update = transition(
        {"phase": "Shadow", "servedVersion": stable},
        Phase.CANARY,
        now=now,
        reason="CanaryStep",
        message=f"version {candidate}: {strategy.stage_name(0)} (1 canary pod(s), 25% of the pods)",
        extra={
            "delivery": "progressive",
            "step": strategy.stage_name(0),
            "stageIndex": 0,
            "stageStartedAt": format_time(now),
            "stableVersion": stable,
            "candidateVersion": candidate,
            "canaryReplicas": 1,
            "lastVerdict": "continue: agreement 0.9 >= 0.8 on 30 samples",
        },
    )
    return {"servedVersion": stable, **update.patch["status"]}


def exported(url: str, metric: str, **labels: str) -> float:
    """The sum of one metric's samples on an API's own /metrics whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def send_rollout_traffic(fleet, stable_requests: int = 30, canary_requests: int = 10) -> None:
    """Requests to the stable and canary pods (3:1, as a 25% canary step), then wait until
    Prometheus has scraped every counter as the processes now export it."""
    from tests.serving.factories import REALISTIC_PRODUCTS

    with httpx.Client(timeout=10) as client:
        for process, n in ((fleet.stable, stable_requests), (fleet.canary, canary_requests)):
            for i in range(n):
                rsp = client.post(
                    f"{process.url}/predict", json=REALISTIC_PRODUCTS[i % len(REALISTIC_PRODUCTS)]
                )
                assert rsp.status_code == 200, rsp.text
    expected = {
        'sum(rakuten_model_requests_total{model_version="1"})': exported(
            fleet.stable.url, "rakuten_model_requests_total", model_version="1"
        ),
        'sum(rakuten_model_requests_total{model_version="2"})': exported(
            fleet.canary.url, "rakuten_model_requests_total", model_version="2"
        ),
        'sum(rakuten_shadow_samples_total{model_version="2", result="scored"})': exported(
            fleet.stable.url, "rakuten_shadow_samples_total", model_version="2", result="scored"
        ),
    }
    assert min(expected.values()) > 0

    def value(expr: str) -> float | None:
        result = instant_query(fleet.prometheus, expr)
        return float(result[0]["value"][1]) if result else None

    wait_until(
        lambda: all(value(q) == v for q, v in expected.items()), 30, 0.3, f"Prometheus to scrape {expected}"
    )


@pytest.mark.long  # two API processes and a Prometheus of their own: past the ~10 s of make test
def test_training_page_shows_the_rollout_in_progress(ui_env, rollout_fleet, served_model, monkeypatch):
    """Phase, step and versions from the ServedModel's status (on the emulated Kubernetes API: no
    cluster runs here); traffic share, shadow agreement and samples per version from a real
    Prometheus scraping the real stable and canary API processes."""
    from rakuten_mlops.settings import get_settings

    monkeypatch.setenv("RAKUTEN_PROMETHEUS_URL", rollout_fleet.prometheus)
    get_settings.cache_clear()
    served_model(canary_status("1", "2"))
    send_rollout_traffic(rollout_fleet)

    at = open_app("training")
    assert [e.value for e in at.main.error] == []
    shown = metrics(at)
    assert shown["Phase"] == "Canary"
    assert shown["Step"] == "canary 25%"
    assert (shown["Stable version"], shown["Candidate version"]) == ("1", "2")
    text = main_text(at)
    assert "ServedModel rakuten-api" in text
    assert "last verdict: continue: agreement 0.9 >= 0.8 on 30 samples" in text
    assert "version 2: canary 25% (1 canary pod(s), 25% of the pods)" in text

    rows = {r["version"]: r for r in at.main.dataframe[0].value.to_dict("records")}
    assert list(rows) == ["1", "2"]
    # rate() extrapolates each series over its own samples: the shares come out near 3:1, not exact
    assert rows["2"]["traffic_share"] == pytest.approx(0.25, abs=0.08)
    assert rows["1"]["traffic_share"] + rows["2"]["traffic_share"] == pytest.approx(1.0)
    assert rows["2"]["in_shadow"] and not rows["1"]["in_shadow"]
    scored = exported(
        rollout_fleet.stable.url, "rakuten_shadow_samples_total", model_version="2", result="scored"
    )
    agreed = exported(rollout_fleet.stable.url, "rakuten_shadow_agreements_total", model_version="2")
    # the shadow's counters from their raw samples in one window: what was counted, exactly
    assert rows["2"]["shadow_samples_5m"] == scored
    assert rows["2"]["shadow_agreement"] == pytest.approx(agreed / scored, rel=1e-12)
    assert pd.isna(rows["1"]["shadow_agreement"])
    assert "No rollout in progress" not in text


def test_with_one_version_served_the_panel_says_no_rollout_is_in_progress(prometheus_env, served_model):
    """The ServedModel is Ready on version 1 (emulated Kubernetes API); the real Prometheus
    scrapes one real API process serving version 1 and shadowing nothing."""
    served_model(
        {"phase": "Ready", "servedVersion": "1", "desiredVersion": "1", "message": "version 1 serves"}
    )
    at = open_app("training")
    assert [e.value for e in at.main.error] == []
    assert "No rollout in progress: rakuten-api serves version 1 (Ready)." in [i.value for i in at.main.info]
    assert "Phase" not in metrics(at)
    assert list(at.main.dataframe[0].value.columns) == VERSION_COLUMNS  # the first table is the versions


def test_without_kubernetes_or_prometheus_the_panel_says_where_rollouts_come_from(ui_env):
    text = main_text(open_app("training"))
    assert "Rollouts show here when the control room reads the ServedModels" in text


def test_the_cheap_variant_shows_the_served_models_rollout_state(prometheus_env, served_model):
    """The ServedModel in shadow (emulated Kubernetes API) beside the real Prometheus that scrapes
    one real API process: phase, step and versions show; Prometheus has no second version to list."""
    status = canary_status("1", "2")
    status.update(phase="Shadow", step="shadow", stageIndex=-1, canaryReplicas=0, lastVerdict="")
    served_model(status)
    at = open_app("training")
    assert [e.value for e in at.main.error] == []
    shown = metrics(at)
    assert (shown["Phase"], shown["Step"]) == ("Shadow", "shadow")
    assert (shown["Stable version"], shown["Candidate version"]) == ("1", "2")
    assert "last verdict" not in main_text(at)
    assert list(at.main.dataframe[0].value.columns) == VERSION_COLUMNS  # no per-version table


# --- the Grafana dashboard's rollout panels on the same Prometheus ------------------------------

DASHBOARD = REPO / "charts" / "rakuten-mlops" / "files" / "dashboards" / "rakuten-mlops.json"

#: The versions each rollout query of the dashboard answers for, by legend: every version that
#: serves requests, and the candidate alone for what only the shadow measures.
PANEL_VERSIONS = {
    "version {{model_version}}": {"1", "2"},
    "in shadow: {{model_version}}": {"2"},
    "agreement {{model_version}}": {"2"},
    "p99 s {{model_version}}": {"1", "2"},
}


def rollout_panels() -> dict[str, list[dict]]:
    """The targets of the dashboard's ``Rollout:`` panels, by panel title."""

    def walk(panels: list[dict]):
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    dashboard = json.loads(DASHBOARD.read_text())
    return {p["title"]: p["targets"] for p in walk(dashboard["panels"]) if p["title"].startswith("Rollout:")}


@pytest.mark.long  # shares the rollout fleet with the page test above
def test_the_dashboards_rollout_panels_show_both_versions(rollout_fleet):
    """Each rollout panel of the Grafana dashboard, its variables filled as Grafana fills them for
    the API's namespace and service, answers on a real Prometheus for the stable and the candidate."""
    send_rollout_traffic(rollout_fleet)
    panels = rollout_panels()
    assert len(panels) == 2, list(panels)
    answers: dict[str, dict[str, float]] = {}
    for title, targets in panels.items():
        versions: set[str] = set()
        for target in targets:
            expr = (
                target["expr"]
                .replace("$namespace", rollout_fleet.labels["namespace"])
                .replace("$service", rollout_fleet.labels["service"])
                .replace("$__rate_interval", "1m")
            )
            result = instant_query(rollout_fleet.prometheus, expr)
            got = {r["metric"].get("model_version", ""): float(r["value"][1]) for r in result}
            assert set(got) == PANEL_VERSIONS[target["legendFormat"]], (title, expr, result)
            answers[target["legendFormat"]] = got
            versions |= set(got)
        assert versions == {"1", "2"}, title
    share = answers["version {{model_version}}"]
    assert sum(share.values()) == pytest.approx(1.0)
    assert share["2"] == pytest.approx(0.25, abs=0.08)
    assert answers["in shadow: {{model_version}}"] == {"2": 1.0}
    assert 0 <= answers["agreement {{model_version}}"]["2"] <= 1
    assert all(0 < p99 < 5 for p99 in answers["p99 s {{model_version}}"].values())
