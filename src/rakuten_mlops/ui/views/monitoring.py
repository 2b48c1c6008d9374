"""Monitoring: latest drift summary and its Evidently report, drift scores over time, retrain
decisions with their reasons, live F1 per model version, label feedback and the realized F1 it gives,
estimated F1 beside realized F1."""

from functools import partial

import streamlit as st

from rakuten_mlops.ui import session
from rakuten_mlops.ui.queries import monitoring as monitoring_q
from rakuten_mlops.ui.queries import workflows

settings = session.settings()
st.title("Monitoring")


def drift_workflow_button() -> None:
    if not settings.argo_server:
        return
    token = session.admin_gate()
    if st.button(
        "Run a drift check now (Argo drift-check)", disabled=token is None, key="submit_drift_workflow"
    ):
        try:
            st.success(workflows.submit_workflow(settings, workflows.DRIFT_WORKFLOW))
        except Exception as exc:
            session.show_error("Submitting the workflow", exc)


def show_drift(reports: list) -> None:
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
    session.section(
        "Drift scores over time",
        lambda: monitoring_q.drift_scores_over_time(reports),
        show_drift_scores,
        failed="Reading the drift scores",
        empty="The drift reports carry no test scores.",
    )


def show_drift_scores(scores) -> None:
    st.line_chart(scores, height=300)
    st.caption(
        "p-value tests (ks, z, chi2) flag drift when the score falls below the threshold; "
        "distance tests (psi, wasserstein, jensenshannon) when it rises above."
    )


def show_live(live) -> None:
    st.line_chart(monitoring_q.live_f1_over_time(live), height=260)
    st.dataframe(live, hide_index=True)


def show_feedback(read: tuple) -> None:
    feedback, realized = read
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


def show_estimates(estimates) -> None:
    latest = estimates.iloc[0]
    if not latest["trusted"]:
        st.warning(
            f"The latest estimate of version {latest['model_version']} is not trusted "
            "(vocabulary, confidence or class mix moved since training): read it as a warning, not a score."
        )
    st.line_chart(monitoring_q.estimated_vs_realized(estimates), height=260)
    st.dataframe(estimates, hide_index=True)


def read_prometheus(settings) -> tuple | None:
    if not settings.prometheus_url:
        return None
    served = monitoring_q.served_models(settings)
    values = {
        label: monitoring_q.prometheus_query(settings, promql)
        for label, promql in monitoring_q.PROMETHEUS_PANELS.items()
    }
    return served, values


def show_prometheus(read: tuple) -> None:
    served, values = read
    cols = st.columns(len(values))
    for col, (label, result) in zip(cols, values.items(), strict=True):
        value = result[0]["value"] if result else None
        col.metric(label, "no data" if value is None or value != value else f"{value:,.3g}")
    if served.empty:
        st.info("Prometheus has no rakuten_model_info series yet (is it scraping the API?).")
    else:
        st.caption("Served model per API instance (rakuten_model_info)")
        st.dataframe(served, hide_index=True)


def read_feedback(settings) -> tuple:
    return monitoring_q.feedback_counts(settings), monitoring_q.feedback_evaluations(settings)


def show_table(frame) -> None:
    st.dataframe(frame, hide_index=True)


# title, read(settings), show, what failed, what the page says when there is nothing, actions
SECTIONS = (
    ("Latest drift check", monitoring_q.drift_reports, show_drift, "Reading the drift reports",
     "No drift check yet: run `rakuten-mlops drift` (or the drift-check workflow).", drift_workflow_button),
    ("Retrain decisions", monitoring_q.retrain_decisions, show_table, "Reading the retrain decisions",
     "No retrain decision yet (`rakuten-mlops decide`).", None),
    ("Live F1 per model version", monitoring_q.live_evaluations, show_live, "Reading the live evaluations",
     "No live evaluation yet: they appear when new labelled batches are scored.", None),
    ("Label feedback and realized F1", read_feedback, show_feedback, "Reading the feedback labels", None, None),
    ("Estimated and realized F1", monitoring_q.performance_estimates, show_estimates,
     "Reading the performance estimates",
     "No performance estimate yet: run `rakuten-mlops estimate` (the daily drift check does).", None),
    ("API metrics (Prometheus)", read_prometheus, show_prometheus, f"Querying Prometheus at {settings.prometheus_url}",
     "RAKUTEN_PROMETHEUS_URL is not set: the API's own numbers are on its /metrics endpoint.", None),
)  # fmt: skip

for title, read, show, failed, empty, actions in SECTIONS:
    session.section(title, partial(read, settings), show, failed=failed, empty=empty, actions=actions)
