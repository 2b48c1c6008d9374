"""Training: versions (scores, lineage, aliases), F1 over versions, per-class F1 and confusion
matrix of a version; train, promote (with a reason) and roll back."""

import pandas as pd
import streamlit as st

from rakuten_mlops.ui import session
from rakuten_mlops.ui.queries import training as training_q

settings = session.settings()
st.title("Training")

try:
    versions = training_q.versions_frame(settings)
except Exception as exc:
    session.show_error("Reading the registry", exc)
    versions = pd.DataFrame(columns=training_q.VERSION_COLUMNS)


def show_rollout(rollout: training_q.Rollout) -> None:
    for name, exc in rollout.errors:
        session.show_error(name, exc)
    for model in rollout.in_progress:
        st.markdown(f"**ServedModel {model['name']}** ({model['registered_model']})")
        cols = st.columns(4)
        cols[0].metric("Phase", model["phase"])
        cols[1].metric("Step", model["step"] or "-")
        cols[2].metric("Stable version", model["stable_version"] or model["served_version"] or "-")
        cols[3].metric("Candidate version", model["candidate_version"] or model["desired_version"] or "-")
        if model["last_verdict"]:
            st.caption(f"last verdict: {model['last_verdict']}")
        st.caption(model["message"])
    if rollout.versions is not None and not rollout.versions.empty:
        st.caption(
            "Last 5 minutes (Prometheus): the share of prediction requests each version answered, and "
            "for a candidate in shadow its agreement with the served version on sampled requests."
        )
        st.dataframe(rollout.versions, hide_index=True)
    if rollout.seen:
        return
    if rollout.served_models is None and rollout.versions is None:
        st.info(
            "Rollouts show here when the control room reads the ServedModels (in-cluster service "
            "account or kubeconfig) or RAKUTEN_PROMETHEUS_URL is set."
        )
        return
    served = ", ".join(
        f"{m['name']} serves version {m['served_version'] or '-'} ({m['phase'] or 'no status'})"
        for m in rollout.served_models or []
    )
    st.info("No rollout in progress" + (f": {served}." if served else "."))


session.section(
    "Rollout",
    lambda: training_q.current_rollout(settings),
    show_rollout,
    failed="Reading the rollout",
    empty=None,
)

st.subheader("Registered versions")
if versions.empty:
    st.info(f"No version of {settings.registered_model} yet: train one below.")
else:
    st.dataframe(versions, hide_index=True)
    chart = versions.assign(version=versions["version"].astype(int)).sort_values("version")
    st.caption("Weighted F1 on the test split, by version")
    st.line_chart(chart, x="version", y=["f1_weighted", "f1_macro"], height=260)

    chosen = st.selectbox("Version to inspect", versions["version"].tolist(), key="inspect_version")
    row = versions[versions["version"] == chosen].iloc[0]
    cols = st.columns([3, 2])
    with cols[0]:
        st.markdown(f"**Per-class F1 of version {chosen}**")
        try:
            per_class = training_q.per_class_f1(settings, row["run_id"]) if row["run_id"] else pd.DataFrame()
        except Exception as exc:
            per_class = pd.DataFrame()
            session.show_error("Reading the run", exc)
        if per_class.empty:
            st.info("This version's run logged no per-class F1.")
        else:
            st.bar_chart(
                per_class, x="category", y="f1", horizontal=True, sort="-f1", height=28 * len(per_class) + 80
            )
    with cols[1]:
        st.markdown(f"**Confusion matrix of version {chosen}**")
        image = training_q.confusion_matrix_image(settings, row["run_id"]) if row["run_id"] else None
        if image:
            st.image(image, caption="row-normalised: recall per true class")
        else:
            st.info("This version's run has no confusion matrix.")
        st.caption(
            f"lineage: batches {row['batch_ids'] or '-'}, dataset {row['dataset_digest'] or '-'}, "
            f"git {row['git_sha'] or '-'}, run `{row['run_id']}`"
        )

with st.expander("Training runs"):
    try:
        st.dataframe(training_q.training_runs(settings), hide_index=True)
    except Exception as exc:
        session.show_error("Reading the runs", exc)

st.subheader("Actions")
token = session.admin_gate()
train_col, promote_col, rollback_col = st.columns(3)

with train_col:
    st.markdown("**Train**")
    st.caption("`train --promote` on everything loaded: via the API's /admin/retrain, else a local process.")
    if st.button("Train a new version", type="primary", disabled=token is None, key="train"):
        try:
            st.session_state["training_job"] = training_q.start_training(settings, token)
        except Exception as exc:
            session.show_error("Starting the training", exc)

    running = st.session_state.get("training_job")
    running = running is not None and not running.finished

    @st.fragment(run_every=3 if running else None)  # poll only while a job runs
    def training_status() -> None:
        job = st.session_state.get("training_job")
        if job is None:
            return
        if not job.finished:
            try:
                job = training_q.training_status(settings, job, session.admin_token())
            except Exception as exc:
                session.show_error("Reading the training status", exc)
                return
            st.session_state["training_job"] = job
            if job.finished:  # new version, new events: refresh the whole page once
                st.rerun()
        label = f"training job {job.id} ({job.via}): {job.status}"
        if job.status == "running":
            st.info(label, icon=":material/hourglass_top:")
            st.button("Refresh status", key="refresh_training")
        elif job.status == "succeeded":
            decision = job.decision or {}
            st.success(f"{label}; version {decision.get('version', '?')}: {decision.get('decision', '?')}")
            for reason in decision.get("reasons", []):
                st.caption(reason)
        else:
            st.error(f"{label} (exit code {job.info.get('exit_code')})")
        if job.info.get("log_tail"):
            with st.expander("log"):
                st.code(job.info["log_tail"][-2000:])

    training_status()

version_list = versions["version"].tolist()
with promote_col, st.form("promote_form"):
    st.markdown("**Promote**")
    version = st.selectbox("Version", version_list, key="promote_version")
    reason = st.text_input("Reason", key="promote_reason")
    force = st.checkbox("Force (skip the gate)", key="promote_force")
    promote = st.form_submit_button(
        "Promote", disabled=token is None or not version_list, key="promote_submit"
    )
if promote:
    try:
        with st.spinner("Scoring on the test split..."):
            result = training_q.promote_version(settings, version, reason, force=force, token=token)
    except Exception as exc:
        session.show_error("Promotion", exc)
    else:
        st.session_state["action_result"] = result
        st.rerun()

with rollback_col, st.form("rollback_form"):
    st.markdown("**Roll back**")
    target = st.selectbox("To version", ["previous production version", *version_list], key="rollback_to")
    reason = st.text_input("Reason", key="rollback_reason")
    rollback = st.form_submit_button(
        "Roll back", disabled=token is None or not version_list, key="rollback_submit"
    )
if rollback:
    to = None if target == "previous production version" else target
    try:
        result = training_q.rollback_production(settings, to, reason, token)
    except Exception as exc:
        session.show_error("Rollback", exc)
    else:
        st.session_state["action_result"] = result
        st.rerun()

if result := st.session_state.pop("action_result", None):
    (st.success if result.ok else st.warning)(result.message)
    for line in result.details:
        st.caption(line)

st.subheader("Model events")
try:
    st.dataframe(
        training_q.training_events(settings),
        hide_index=True,
    )
except Exception as exc:
    session.show_error("Reading the model events", exc)
