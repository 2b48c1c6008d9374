"""The control room: a multipage Streamlit app over the platform's Python functions and its API.

Pages live in ``views/`` and stay thin; what they show and do comes from plain functions in
``queries/`` (one module per page), ``health`` and ``api`` (testable without Streamlit).
"""
