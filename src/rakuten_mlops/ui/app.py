"""Entry point of the control room: `rakuten-mlops ui` runs `streamlit run` on this file."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rakuten_mlops.ui import session

VIEWS = Path(__file__).with_name("views")
PAGES = [
    st.Page(VIEWS / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page(VIEWS / "data.py", title="Data", icon=":material/database:"),
    st.Page(VIEWS / "training.py", title="Training", icon=":material/model_training:"),
    st.Page(VIEWS / "predict.py", title="Predict", icon=":material/online_prediction:"),
    st.Page(VIEWS / "monitoring.py", title="Monitoring", icon=":material/monitoring:"),
]

st.set_page_config(page_title="Rakuten MLOps control room", page_icon=":material/storefront:", layout="wide")
page = st.navigation(PAGES)
session.sidebar()
page.run()
