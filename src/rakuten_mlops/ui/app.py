"""Entry point of the control room: `rakuten-mlops ui` runs `streamlit run` on this file."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rakuten_mlops.ui import session

VIEWS = Path(__file__).with_name("views")
PAGES = [
    st.Page(VIEWS / "overview.py", title="Overview", icon="🧭", default=True),
    st.Page(VIEWS / "data.py", title="Data", icon="🗃️"),
    st.Page(VIEWS / "training.py", title="Training", icon="🏋️"),
    st.Page(VIEWS / "predict.py", title="Predict", icon="🔮"),
    st.Page(VIEWS / "monitoring.py", title="Monitoring", icon="📈"),
]

st.set_page_config(page_title="Rakuten MLOps control room", page_icon="🛒", layout="wide")
page = st.navigation(PAGES)
session.sidebar()
page.run()
