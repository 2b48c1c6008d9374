"""Monitoring: latest drift summary and its Evidently report, drift scores over time, retrain
decisions with their reasons, live F1 per model version, label feedback and the realized F1 it gives,
estimated F1 beside realized F1."""

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


def read_prometheus() -> tuple | None:
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


session.section(
    "Latest drift check",
    lambda: monitoring_q.drift_reports(settings),
    show_drift,
    failed="Reading the drift reports",
    empty="No drift check yet: run `rakuten-mlops drift` (or the drift-check workflow).",
    actions=drift_workflow_button,
)
session.section(
    "Retrain decisions",
    lambda: monitoring_q.retrain_decisions(settings),
    lambda decisions: st.dataframe(decisions, hide_index=True),
    failed="Reading the retrain decisions",
    empty="No retrain decision yet (`rakuten-mlops decide`).",
)
session.section(
    "Live F1 per model version",
    lambda: monitoring_q.live_evaluations(settings),
    show_live,
    failed="Reading the live evaluations",
    empty="No live evaluation yet: they appear when new labelled batches are scored.",
)
session.section(
    "Label feedback and realized F1",
    lambda: (monitoring_q.feedback_counts(settings), monitoring_q.feedback_evaluations(settings)),
    show_feedback,
    failed="Reading the feedback labels",
    empty=None,
)
session.section(
    "Estimated and realized F1",
    lambda: monitoring_q.performance_estimates(settings),
    show_estimates,
    failed="Reading the performance estimates",
    empty="No performance estimate yet: run `rakuten-mlops estimate` (the daily drift check does).",
)
session.section(
    "API metrics (Prometheus)",
    read_prometheus,
    show_prometheus,
    failed=f"Querying Prometheus at {settings.prometheus_url}",
    empty="RAKUTEN_PROMETHEUS_URL is not set: the API's own numbers are on its /metrics endpoint.",
)
