"""Overview: health of every backend, the production model and its scores, last load, last drift."""

import streamlit as st

from rakuten_mlops.ui import health, session
from rakuten_mlops.ui.queries import monitoring as monitoring_q
from rakuten_mlops.ui.queries import overview as overview_q
from rakuten_mlops.ui.queries import training as training_q

settings = session.settings()
st.title("Control room")
st.caption("Rakuten France product classification: data, training, serving and drift at a glance.")

st.subheader("Health")
for check in health.all_checks(settings):
    target = f" · `{check.target}`" if check.target else ""
    st.markdown(f"{check.badge} **{check.component}**: {check.reason}{target}")

st.subheader("Production model")
try:
    versions = training_q.versions_frame(settings)
except Exception as exc:
    versions = None
    session.show_error("Reading the registry", exc)
production = (
    training_q.production_summary(versions, settings.production_alias) if versions is not None else None
)
if production:
    cols = st.columns(4)
    cols[0].metric("Production version", f"v{production['version']}")
    for col, metric, label in zip(
        cols[1:],
        ("f1_weighted", "f1_macro", "accuracy"),
        ("Weighted F1", "Macro F1", "Accuracy"),
        strict=True,
    ):
        value = production[metric]
        col.metric(label, "n/a" if value is None else f"{value:.4f}")
    st.caption(
        f"trained on batches {production['batch_ids'] or '-'} ({production['train_rows'] or '?'} rows), "
        f"gate: {production['gate_decision'] or '-'}, registered {production['created_at']}"
    )
elif versions is not None:
    st.info("No production model yet: train one on the Training page.")

cols = st.columns(2)
with cols[0]:
    st.subheader("Last load")
    try:
        last = overview_q.latest_load(settings)
    except Exception as exc:
        last = None
        session.show_error("Reading the load batches", exc)
    if last:
        st.markdown(
            f"Batch **{last['id']}** {last['status']}: {last['row_count']:,} rows "
            f"(rows {last['row_start']}-{last['row_end']} of {last['source_rows']:,}), "
            f"finished {str(last['finished_at'] or '-')[:19]}"
        )
    else:
        st.info("Nothing loaded yet: load a first batch on the Data page.")
with cols[1]:
    st.subheader("Last drift check")
    try:
        reports = monitoring_q.drift_reports(settings, limit=1)
    except Exception as exc:
        reports = []
        session.show_error("Reading the drift reports", exc)
    if reports:
        r = reports[0]
        st.markdown(
            f"Severity **{r['severity']}** ({'drift' if r['drifted'] else 'no drift'}) on {r['n_current']:,} "
            f"predictions vs {r['n_reference']:,} training rows, model v{r['model_version'] or '?'}, "
            f"{str(r['created_at'])[:19]}"
        )
    else:
        st.info("No drift check yet (`rakuten-mlops drift`).")
