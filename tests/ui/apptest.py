"""Constants of the control-room tests and what they do with Streamlit's AppTest: open a page, read it, type a token."""

from __future__ import annotations

from pathlib import Path

import rakuten_mlops.ui

APP = Path(rakuten_mlops.ui.__file__).with_name("app.py")
ADMIN_TOKEN = "ui-test-token-8d41c7"
DEAD_API = "http://127.0.0.1:9"  # nothing listens on the discard port
REPORT_MARKER = "Evidently drift report of the UI tests"


# --- AppTest helpers -----------------------------------------------------------------------------


def open_app(page: str | None = None, timeout: float = 90):
    """Run the control room in AppTest and (optionally) switch to ``views/<page>.py``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=timeout).run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def main_text(at) -> str:
    """Every text a user reads in the main area (markdown, alerts, captions, metrics, titles)."""
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "success", "info", "warning", "error"):
        parts += [str(e.value) for e in getattr(at.main, kind)]
    parts += [f"{m.label}: {m.value}" for m in at.main.metric]
    return "\n".join(parts)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.main.metric}


def charts(at) -> list:
    return list(at.main.get("vega_lite_chart"))


def type_token(at, token: str = ADMIN_TOKEN):
    at.sidebar.text_input(key="admin_token").input(token).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def health_line(at, component: str) -> tuple[str, str]:
    """(state, rest of the line) of one health check on the Overview (badge colour -> state)."""
    import re

    for md in at.main.markdown:
        m = re.match(
            rf":(\w+)-badge\[:material/\w+: ([a-z ]+)\] \*\*{re.escape(component)}\*\*: (.*)", md.value
        )
        if m:
            colour, state, rest = m.groups()
            assert {"ok": "green", "degraded": "orange", "down": "red", "not configured": "gray"}[
                state
            ] == colour
            return state, rest
    raise AssertionError(f"no health line for {component}")


def log_predictions(settings, batch_id: int, version: str) -> int:
    """Prediction-log rows for the products of one batch, as the API writes them."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from rakuten_mlops.db import session_scope
    from rakuten_mlops.db.models import Prediction
    from rakuten_mlops.monitoring.live import batch_products

    products = batch_products(settings, batch_id)
    now = datetime.now(UTC)
    with session_scope(settings.database_url) as session:
        for i, p in enumerate(products.itertuples()):
            text = f"{p.designation} {p.description}".strip()
            session.add(
                Prediction(
                    prediction_id=str(uuid.uuid4()),
                    created_at=now - timedelta(minutes=i),
                    model_version=version,
                    prdtypecode=int(p.prdtypecode),
                    confidence=0.6,
                    text_length=len(text),
                    word_count=len(text.split()),
                    description_empty=not p.description,
                    oov_rate=None,
                )  # fmt: skip
            )
    return len(products)
