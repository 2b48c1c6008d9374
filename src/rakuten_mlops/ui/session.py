"""What every page shares: settings, the sidebar (backends, admin token) and the admin check."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import streamlit as st

from rakuten_mlops.settings import Settings, get_settings, redact_url
from rakuten_mlops.ui.queries import admin

TOKEN_KEY = "admin_token"


def settings() -> Settings:
    return get_settings()


def sidebar() -> None:
    """Backends in use and the admin token field (drawn on every page)."""
    s = settings()
    with st.sidebar:
        st.text_input(
            "Admin token",
            type="password",
            key=TOKEN_KEY,
            help="RAKUTEN_ADMIN_TOKEN: unlocks loading, training, promotion and rollback. "
            "Empty: the control room's own RAKUTEN_ADMIN_TOKEN, if it has one.",
        )
        allowed, why = admin_state()
        (st.success if allowed else st.info)(
            why, icon=":material/lock_open:" if allowed else ":material/lock:"
        )
        st.caption(
            f"API: `{s.api_url}`  \ndata: `{redact_url(s.database_url)}`  \n"
            f"MLflow: `{redact_url(s.mlflow_tracking_uri)}`"
        )


def admin_token() -> str | None:
    """The token typed in the sidebar, else this process's RAKUTEN_ADMIN_TOKEN."""
    typed = (st.session_state.get(TOKEN_KEY) or "").strip()
    if typed:
        return typed
    s = settings()
    return s.admin_token.get_secret_value() if s.admin_token is not None else None


def admin_state() -> tuple[bool, str]:
    """(allowed, why), checked once per token and session (the API check is a network call)."""
    token = admin_token()
    key = "admin_check:" + hashlib.sha256((token or "").encode()).hexdigest()[:16]
    if key in st.session_state:
        return st.session_state[key]
    verdict = admin.check_admin_token(settings(), token)
    if verdict[0] or verdict[1].startswith("wrong"):  # a network failure is checked again next time
        st.session_state[key] = verdict
    return verdict


def admin_gate() -> str | None:
    """The token when admin actions are allowed, else None (and the page says why)."""
    allowed, why = admin_state()
    if not allowed:
        st.info(why, icon=":material/lock:")
        return None
    return admin_token()


def show_error(action: str, exc: Exception) -> None:
    """An error as one readable line (domain errors carry their own advice)."""
    st.error(f"{action} failed: {exc}", icon=":material/error:")


def section(
    title: str,
    read: Callable[[], Any],
    show: Callable[[Any], None],
    *,
    failed: str,
    empty: str | None,
    actions: Callable[[], None] | None = None,
) -> Any:
    """One section of a page: its subheader, ``actions`` (buttons) under it, then what ``read``
    returns drawn by ``show``; an error line when reading fails, the ``empty`` line when there is
    nothing (None, or an empty frame or list; ``empty=None``: ``show`` draws whatever was read).
    Returns what was read (None after an error)."""
    st.subheader(title)
    if actions is not None:
        actions()
    try:
        data = read()
    except Exception as exc:
        show_error(failed, exc)
        return None
    if empty is not None and (data is None or (data.empty if hasattr(data, "empty") else not data)):
        st.info(empty)
    else:
        show(data)
    return data
