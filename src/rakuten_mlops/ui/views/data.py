"""Data: loaded share, rows per class, load batches, backlog; load the next batch."""

import streamlit as st

from rakuten_mlops.ui import session
from rakuten_mlops.ui.queries import data as data_q
from rakuten_mlops.ui.queries import workflows

settings = session.settings()
st.title("Data")

try:
    status = data_q.data_status(settings)
except Exception as exc:
    session.show_error("Reading the data status", exc)
    st.stop()

share = data_q.loaded_share(status)
cols = st.columns(4)
cols[0].metric("Products loaded", f"{status.total_products:,}")
cols[1].metric("Loaded share", "n/a" if share is None else f"{share:.0%}")
cols[2].metric("Train / test", f"{status.train_rows:,} / {status.test_rows:,}")
cols[3].metric(
    "Backlog",
    f"{status.backlog_rows:,}",
    help="Labelled rows loaded after the newest batch the production model was trained on.",
)
if status.production_version:
    st.caption(
        f"Production model v{status.production_version} was trained on batches "
        f"{status.production_batch_ids or '?'}; retraining is due at {settings.retrain_backlog:,} backlog rows."
    )
if status.registry_error:
    st.warning(f"Registry not reachable: {status.registry_error}")

st.subheader("Rows per class")
per_class = data_q.rows_per_class_frame(status)
if per_class.empty:
    st.info("No products loaded yet.")
else:
    st.bar_chart(
        per_class, x="category", y="rows", horizontal=True, sort="-rows", height=28 * len(per_class) + 80
    )

st.subheader("Load batches")
st.dataframe(data_q.batches_frame(status), hide_index=True)
for s in status.sources:
    total = s.get("total") or 0
    st.caption(f"source `{s['source']}`: {s['loaded']:,} of {total:,} rows in {s['batches']} batch(es)")

st.subheader("Load the next batch")
token = session.admin_gate()
with st.form("load_form"):
    source = st.text_input(
        "Source folder (official CSV layout)", value=data_q.default_source(settings), key="source"
    )
    fraction = st.number_input(
        "Batch size (share of the source)", min_value=0.001, max_value=1.0, value=0.03, step=0.01, format="%.3f",
        key="batch_fraction",
    )  # fmt: skip
    submitted = st.form_submit_button(
        "Load next batch", type="primary", disabled=token is None, key="load_submit"
    )
if submitted:
    try:
        with st.spinner("Loading..."):
            result = data_q.load_next_batch(settings, source, fraction)
    except Exception as exc:
        session.show_error("Loading", exc)
    else:
        st.session_state["last_load_message"] = result.describe()
        st.rerun()
if message := st.session_state.pop("last_load_message", None):
    st.success(message)

if settings.argo_server:
    st.markdown(
        "**In the cluster**: run the `incremental-load` workflow now (its pod mounts the source data)."
    )
    if st.button("Submit incremental-load", disabled=token is None, key="submit_load_workflow"):
        try:
            st.success(workflows.submit_workflow(settings, workflows.LOAD_WORKFLOW))
        except Exception as exc:
            session.show_error("Submitting the workflow", exc)
