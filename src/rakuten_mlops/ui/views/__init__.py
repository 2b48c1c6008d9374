"""The pages of the control room (run by ``st.navigation`` from ``app.py``)."""
