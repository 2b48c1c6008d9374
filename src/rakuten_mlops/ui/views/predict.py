"""Predict: a product form -> category, confidence, top-k and (optionally) the explanation through
the API; recent predictions."""

import streamlit as st

from rakuten_mlops.ui import session
from rakuten_mlops.ui.queries import predict as predict_q

settings = session.settings()
st.title("Predict")
st.caption(f"Asks the prediction API at `{settings.api_url}` (`POST /predict`).")

with st.form("predict_form"):
    designation = st.text_input("Designation (product title)", key="designation")
    description = st.text_area("Description", key="description", height=120)
    k = st.slider("Classes to show", min_value=1, max_value=10, value=5, key="top_k")
    explain = st.checkbox("Explain: the words that pushed the prediction", key="explain")
    submitted = st.form_submit_button("Classify", type="primary", key="classify")
if submitted:
    try:
        st.session_state["prediction"] = predict_q.predict(settings, designation, description, k, explain)
    except Exception as exc:
        st.session_state.pop("prediction", None)
        session.show_error("Prediction", exc)

if prediction := st.session_state.get("prediction"):
    st.success(f"Category: **{prediction['category']}** (prdtypecode {prediction['prdtypecode']})")
    cols = st.columns(3)
    cols[0].metric("Confidence", f"{prediction['confidence']:.1%}")
    cols[1].metric("Model version", f"v{prediction['model_version']}")
    # Ids start with their time, so only the tail tells two predictions of the same minute apart.
    cols[2].metric("Prediction id", prediction["prediction_id"][-12:])
    st.caption(f"Prediction id for `POST /feedback`: `{prediction['prediction_id']}`")
    st.bar_chart(
        predict_q.top_k_frame(prediction), x="class", y="probability", horizontal=True, sort="-probability"
    )
    if explanation := prediction.get("explanation"):
        st.subheader("Why this category")
        st.caption(
            "Each n-gram's contribution to a class score is its TF-IDF value times the class's "
            "coefficient (exact for this linear model); the probabilities are the softmax of the "
            f"scores times the temperature {explanation['temperature']:.3g}."
        )
        for column, (title, evidence) in zip(
            st.columns(2),
            (
                ("Pushed the prediction most", explanation["predicted"]),
                ("Strongest evidence for the runner-up", explanation["runner_up"]),
            ),
            strict=True,
        ):
            column.markdown(f"**{title}: {evidence['category']}** ({evidence['prdtypecode']})")
            frame = predict_q.evidence_frame(evidence)
            if frame.empty:
                column.info("No n-gram of this product pushes toward this class.")
            else:
                column.dataframe(frame, hide_index=True)
            column.caption(predict_q.evidence_sum(evidence))

st.subheader("Recent predictions")
try:
    recent = predict_q.recent_predictions(settings)
except Exception as exc:
    session.show_error("Reading the prediction log", exc)
else:
    if recent.empty:
        st.info("No prediction logged yet.")
    else:
        st.dataframe(recent, hide_index=True)
    st.button("Refresh", key="refresh_predictions")
