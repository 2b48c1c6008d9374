"""Monitoring: latest drift summary and its Evidently report, drift scores over time, retrain
decisions with their reasons, live F1 per model version, label feedback and the realized F1 it gives,
estimated F1 beside realized F1."""

import streamlit as st

from rakuten_mlops.ui import session
from rakuten_mlops.ui.queries import monitoring as monitoring_q
from rakuten_mlops.ui.queries import workflows

settings = session.settings()
st.title("Monitoring")

try:
    reports = monitoring_q.drift_reports(settings)
except Exception as exc:
    session.show_error("Reading the drift reports", exc)
    reports = []

st.subheader("Latest drift check")
if settings.argo_server:
    token = session.admin_gate()
    if st.button(
        "Run a drift check now (Argo drift-check)", disabled=token is None, key="submit_drift_workflow"
    ):
        try:
            st.success(workflows.submit_workflow(settings, workflows.DRIFT_WORKFLOW))
        except Exception as exc:
            session.show_error("Submitting the workflow", exc)
if not reports:
    st.info("No drift check yet: run `rakuten-mlops drift` (or the drift-check workflow).")
else:
    latest = reports[0]
    cols = st.columns(4)
    cols[0].metric("Severity", latest["severity"])
    cols[1].metric("Drifted", "yes" if latest["drifted"] else "no")
    cols[2].metric("Current rows", f"{latest['n_current']:,}")
    cols[3].metric("Reference rows", f"{latest['n_reference']:,}")
    st.caption(
        f"model v{latest['model_version'] or '?'}, window {str(latest['window_start'] or '-')[:19]} to "
        f"{str(latest['window_end'] or '-')[:19]}, checked {str(latest['created_at'])[:19]}"
    )
    st.dataframe(
        monitoring_q.drift_tests_frame(latest),
        hide_index=True,
        column_config={
            "score": st.column_config.NumberColumn(format="%.4g"),
            "threshold": st.column_config.NumberColumn(format="%.4g"),
        },
    )
    html, note = monitoring_q.drift_report_html(settings, latest)
    with st.expander("Evidently report", expanded=html is not None):
        if html is not None:
            st.caption(note)
            st.iframe(html, height=700)
        else:
            st.info(note)

    st.subheader("Drift scores over time")
    scores = monitoring_q.drift_scores_over_time(reports)
    if scores.empty:
        st.info("The drift reports carry no test scores.")
    else:
        st.line_chart(scores, height=300)
        st.caption(
            "p-value tests (ks, z, chi2) flag drift when the score falls below the threshold; "
            "distance tests (psi, wasserstein, jensenshannon) when it rises above."
        )

st.subheader("Retrain decisions")
try:
    decisions = monitoring_q.retrain_decisions(settings)
except Exception as exc:
    session.show_error("Reading the retrain decisions", exc)
else:
    if decisions.empty:
        st.info("No retrain decision yet (`rakuten-mlops decide`).")
    else:
        st.dataframe(decisions, hide_index=True)

st.subheader("Live F1 per model version")
try:
    live = monitoring_q.live_evaluations(settings)
except Exception as exc:
    session.show_error("Reading the live evaluations", exc)
else:
    if live.empty:
        st.info("No live evaluation yet: they appear when new labelled batches are scored.")
    else:
        st.line_chart(monitoring_q.live_f1_over_time(live), height=260)
        st.dataframe(live, hide_index=True)

st.subheader("Label feedback and realized F1")
try:
    feedback = monitoring_q.feedback_counts(settings)
    realized = monitoring_q.feedback_evaluations(settings)
except Exception as exc:
    session.show_error("Reading the feedback labels", exc)
else:
    if feedback.empty:
        st.info("No feedback label yet: label sources send true classes to the API's POST /feedback.")
    else:
        cols = st.columns(2)
        cols[0].metric("Feedback labels", f"{int(feedback['labels'].sum()):,}")
        cols[1].metric("Feedback labels (24 h)", f"{int(feedback['last_24h'].sum()):,}")
        st.dataframe(feedback, hide_index=True)
    if realized.empty:
        st.caption("No realized F1 from feedback yet: `rakuten-mlops evaluate-feedback --window 1d`.")
    else:
        st.caption("Realized weighted F1 per model version on the feedback labels of each window")
        st.line_chart(monitoring_q.live_f1_over_time(realized), height=260)
        st.dataframe(realized, hide_index=True)

st.subheader("Estimated and realized F1")
try:
    estimates = monitoring_q.performance_estimates(settings)
except Exception as exc:
    session.show_error("Reading the performance estimates", exc)
else:
    if estimates.empty:
        st.info("No performance estimate yet: run `rakuten-mlops estimate` (the daily drift check does).")
    else:
        latest = estimates.iloc[0]
        if not latest["trusted"]:
            st.warning(
                f"The latest estimate of version {latest['model_version']} is not trusted "
                "(vocabulary, confidence or class mix moved since training): read it as a warning, not a score."
            )
        st.line_chart(monitoring_q.estimated_vs_realized(estimates), height=260)
        st.dataframe(estimates, hide_index=True)

st.subheader("API metrics (Prometheus)")
if not settings.prometheus_url:
    st.info("RAKUTEN_PROMETHEUS_URL is not set: the API's own numbers are on its /metrics endpoint.")
else:
    try:
        served = monitoring_q.served_models(settings)
        values = {
            label: monitoring_q.prometheus_query(settings, promql)
            for label, promql in monitoring_q.PROMETHEUS_PANELS.items()
        }
    except Exception as exc:
        session.show_error(f"Querying Prometheus at {settings.prometheus_url}", exc)
    else:
        cols = st.columns(len(values))
        for col, (label, result) in zip(cols, values.items(), strict=True):
            value = result[0]["value"] if result else None
            col.metric(label, "no data" if value is None or value != value else f"{value:,.3g}")
        if served.empty:
            st.info("Prometheus has no rakuten_model_info series yet (is it scraping the API?).")
        else:
            st.caption("Served model per API instance (rakuten_model_info)")
            st.dataframe(served, hide_index=True)
