"""Every page of the control room in Streamlit's AppTest, on a real platform (data, registry, events)."""

from __future__ import annotations

import pytest

from tests.ui.apptest import (
    REPORT_MARKER,
    charts,
    health_line,
    log_predictions,
    main_text,
    metrics,
    open_app,
    type_token,
)


def test_overview_shows_health_production_model_last_load_and_drift(ui_env):
    at = open_app()
    text = main_text(at)
    assert health_line(at, "database")[0] == "ok"
    assert health_line(at, "database")[1].startswith("reachable, 2,250 products")
    assert health_line(at, "MLflow")[1].startswith("embedded store reachable; production version: 1")
    state, reason = health_line(at, "API")
    assert state == "down" and reason.startswith("cannot reach the API at http://127.0.0.1:9")
    assert health_line(at, "Argo") == (
        "not configured",
        "ARGO_SERVER is not set (retraining runs as a local process)",
    )
    assert health_line(at, "Prometheus") == ("not configured", "RAKUTEN_PROMETHEUS_URL is not set")
    shown = metrics(at)
    assert shown["Production version"] == "v1"
    assert 0.3 < float(shown["Weighted F1"]) <= 1.0
    assert "Batch **2** succeeded: 450 rows" in text
    assert "Severity **high** (drift) on 640 predictions vs 1,200 training rows" in text


def test_overview_says_why_configured_argo_and_prometheus_are_red(ui_env, monkeypatch):
    from rakuten_mlops.settings import get_settings

    monkeypatch.setenv("ARGO_SERVER", "http://127.0.0.1:9")
    monkeypatch.setenv("RAKUTEN_PROMETHEUS_URL", "http://127.0.0.1:9")
    get_settings.cache_clear()
    at = open_app()
    for component in ("Argo", "Prometheus"):
        state, reason = health_line(at, component)
        assert state == "down" and reason.startswith("ConnectError"), (component, reason)


def test_overview_without_any_model_or_data_says_what_to_do(empty_env):
    text = main_text(open_app())
    assert "production version: none yet" in text
    assert "No production model yet: train one on the Training page." in text
    assert "Nothing loaded yet: load a first batch on the Data page." in text
    assert "No drift check yet" in text


def test_data_page_shows_loaded_share_classes_batches_and_backlog(ui_env):
    at = open_app("data")
    shown = metrics(at)
    assert shown["Products loaded"] == "2,250"
    assert shown["Loaded share"] == "75%"
    assert shown["Backlog"] == "450"  # batch 2 came after v1's training data
    assert "Production model v1 was trained on batches [1]" in main_text(at)
    per_class = charts(at)
    assert len(per_class) == 1
    batches = at.main.dataframe[0].value
    assert list(batches["id"]) == [2, 1]
    assert list(batches["status"]) == ["succeeded", "succeeded"]
    assert list(batches["row_count"]) == [450, 1800]


def test_data_page_load_button_is_locked_without_token(ui_env, monkeypatch):
    from rakuten_mlops.settings import get_settings

    monkeypatch.delenv("RAKUTEN_ADMIN_TOKEN")
    get_settings.cache_clear()
    at = open_app("data")
    assert at.button(key="load_submit").disabled
    assert "admin actions are locked: type the admin token in the sidebar" in main_text(at)


def test_wrong_token_is_refused_in_the_sidebar(ui_env):
    at = type_token(open_app("data"), "not-the-token")
    assert at.sidebar.info[0].value == "wrong admin token"
    assert at.button(key="load_submit").disabled


def test_load_next_batch_adds_a_batch(ui_env, platform):
    at = type_token(open_app("data"))
    assert at.sidebar.success[0].value == "admin token accepted"
    assert at.text_input(key="source").value == str(platform.source)
    at.number_input(key="batch_fraction").set_value(0.05)
    at.button(key="load_submit").click().run()
    assert not at.exception
    assert "loaded batch 3: 150 products" in main_text(at)
    assert metrics(at)["Products loaded"] == "2,400"
    assert list(at.main.dataframe[0].value["id"]) == [3, 2, 1]


def test_load_from_a_missing_folder_says_so(ui_env, tmp_path):
    at = type_token(open_app("data"))
    at.text_input(key="source").input(str(tmp_path / "nowhere"))
    at.button(key="load_submit").click().run()
    assert "Loading failed:" in main_text(at)
    assert metrics(at)["Products loaded"] == "2,250"


def test_training_page_shows_versions_scores_lineage_and_charts(ui_env):
    at = open_app("training")
    versions = at.main.dataframe[0].value
    assert list(versions["version"]) == ["2", "1"]
    assert list(versions["aliases"]) == ["", "production"]
    assert versions["f1_weighted"].between(0.3, 1.0).all()
    assert list(versions["batch_ids"]) == ["1,2", "1"]
    assert len(charts(at)) == 2  # F1 over versions, per-class F1 of the chosen version
    at.selectbox(key="inspect_version").select("1").run()
    text = main_text(at)
    assert "Per-class F1 of version 1" in text
    assert "lineage: batches 1, dataset" in text
    assert len(at.main.get("image")) == 1  # confusion matrix of the run
    events = at.main.dataframe[-1].value
    assert {"trained", "promoted"} <= set(events["event_type"])


def test_promote_needs_a_reason_then_forces_and_records_it(ui_env):
    at = type_token(open_app("training"))
    at.selectbox(key="promote_version").select("2")
    at.checkbox(key="promote_force").check()
    at.button(key="promote_submit").click().run()
    assert "Promotion failed: give a reason" in main_text(at)

    at.selectbox(key="promote_version").select("2")
    at.text_input(key="promote_reason").input("hotfix for the summer catalogue")
    at.checkbox(key="promote_force").check()
    at.button(key="promote_submit").click().run()
    assert not at.exception
    text = main_text(at)
    assert "version 2 forced into production" in text
    versions = at.main.dataframe[0].value
    assert versions.set_index("version").loc["2", "aliases"] == "production"
    events = at.main.dataframe[-1].value
    forced = events[events["event_type"] == "forced"].iloc[0]
    assert forced["reason"] == "hotfix for the summer catalogue"
    assert forced["actor"] == "ui"


def test_promote_through_the_gate_reports_its_decision(ui_env):
    at = type_token(open_app("training"))
    at.selectbox(key="promote_version").select("2")
    at.text_input(key="promote_reason").input("more data since v1")
    at.button(key="promote_submit").click().run()
    assert not at.exception
    text = main_text(at)
    assert ("version 2 promoted to production" in text) or ("the gate refused version 2" in text)
    assert "reason given: more data since v1" in text
    assert "RAKUTEN_MIN_F1" in text  # the gate's reasons are shown


def test_rollback_returns_to_the_previous_production_version(ui_env):
    at = type_token(open_app("training"))
    at.selectbox(key="promote_version").select("2")
    at.text_input(key="promote_reason").input("try v2")
    at.checkbox(key="promote_force").check()
    at.button(key="promote_submit").click().run()
    assert "version 2 forced into production" in main_text(at)

    at.text_input(key="rollback_reason").input("v2 misclassifies books")
    at.button(key="rollback_submit").click().run()
    assert not at.exception
    assert "production rolled back from version 2 to version 1" in main_text(at)
    versions = at.main.dataframe[0].value
    assert versions.set_index("version").loc["1", "aliases"] == "production"
    events = at.main.dataframe[-1].value
    assert events.iloc[0]["event_type"] == "rollback"
    assert events.iloc[0]["reason"] == "v2 misclassifies books"


def test_monitoring_shows_drift_report_scores_decisions_and_live_f1(ui_env):
    at = open_app("monitoring")
    shown = metrics(at)
    assert shown["Severity"] == "high"
    assert shown["Drifted"] == "yes"
    assert shown["Current rows"] == "640"
    tests = at.main.dataframe[0].value
    assert list(tests["feature"]) == ["text_length", "prdtypecode"]
    assert list(tests["drifted"]) == [True, True]
    iframes = at.main.get("iframe")
    assert len(iframes) == 1 and REPORT_MARKER in str(iframes[0].proto)
    assert len(charts(at)) == 2  # drift scores over time, live F1 per version
    decisions = at.main.dataframe[1].value
    assert decisions.iloc[0]["retrain"] is True or bool(decisions.iloc[0]["retrain"])
    assert "live weighted F1 0.64 < RAKUTEN_RETRAIN_F1 0.70" in decisions.iloc[0]["reason"]
    live = at.main.dataframe[2].value
    assert sorted(live["f1_weighted"]) == [0.64, 0.81]


def test_monitoring_before_any_check_says_how_to_get_one(empty_env):
    text = main_text(open_app("monitoring"))
    assert "No drift check yet: run `rakuten-mlops drift`" in text
    assert "No retrain decision yet" in text
    assert "No live evaluation yet" in text


@pytest.mark.parametrize("page", ["overview", "data", "training", "predict", "monitoring"])
def test_every_page_opens_without_error_on_an_empty_platform(empty_env, page):
    at = open_app(None if page == "overview" else page)
    assert not at.exception
    assert at.main.title[0].value == {"overview": "Control room"}.get(page, page.capitalize())
    assert [e.value for e in at.main.error] == []


def test_monitoring_shows_what_the_real_drift_decide_and_live_jobs_wrote(ui_env):
    from rakuten_mlops.monitoring.decision import decide
    from rakuten_mlops.monitoring.drift import run_drift_check
    from rakuten_mlops.monitoring.live import evaluate_live

    assert log_predictions(ui_env, 2, "1") == 450
    check = run_drift_check(ui_env, "7d")
    live = evaluate_live(ui_env, 2)
    decision = decide(ui_env, actor="ui-tests")

    at = open_app("monitoring")
    shown = metrics(at)
    assert shown["Severity"] == check.severity
    assert shown["Current rows"] == f"{check.summary['n_current']:,}"
    tests = at.main.dataframe[0].value
    assert len(tests) == len(check.summary["tests"]) > 0
    if check.summary.get("html_path"):
        assert len(at.main.get("iframe")) == 1
    decisions = at.main.dataframe[1].value
    newest = decisions.iloc[0]
    assert newest["decision"] == ("retrain" if decision.retrain else "keep")
    assert bool(newest["retrain"]) is decision.retrain
    assert newest["reason"] == ("; ".join(decision.reasons) or "no trigger fired")
    live_rows = at.main.dataframe[2].value
    assert round(live.f1_weighted, 6) in set(live_rows["f1_weighted"].round(6))
