"""Predict: a product form -> category, confidence and top-k through the API; recent predictions."""

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
    submitted = st.form_submit_button("Classify", type="primary", key="classify")
if submitted:
    try:
        st.session_state["prediction"] = predict_q.predict(settings, designation, description, k)
    except Exception as exc:
        st.session_state.pop("prediction", None)
        session.show_error("Prediction", exc)

if prediction := st.session_state.get("prediction"):
    st.success(f"Category: **{prediction['category']}** (prdtypecode {prediction['prdtypecode']})")
    cols = st.columns(3)
    cols[0].metric("Confidence", f"{prediction['confidence']:.1%}")
    cols[1].metric("Model version", f"v{prediction['model_version']}")
    cols[2].metric("Prediction id", prediction["prediction_id"][:8])
    st.bar_chart(
        predict_q.top_k_frame(prediction), x="class", y="probability", horizontal=True, sort="-probability"
    )

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
