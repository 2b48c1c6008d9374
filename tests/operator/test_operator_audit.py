"""model_events rows written by the operator: real SQLite data DB, schema from the migrations."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from rakuten_mlops.db import upgrade
from rakuten_operator.reconcile import ModelRollout
from rakuten_operator.rollout import ServedModelSpec

SPEC = ServedModelSpec(deployment="api")


def rollout(db_url: str) -> ModelRollout:
    return ModelRollout("classifier", "rakuten", cluster=None, notify=lambda *a: None, db_url=db_url)


def test_rollback_rows_land_in_model_events(sqlite_url):
    upgrade(sqlite_url)
    audit = rollout(sqlite_url)
    audit._record("rollout_failed", SPEC, version="2", previous_version="1", reason="timed out after 600s")
    audit._record("rollback", SPEC, version="1", previous_version="2", reason="timed out after 600s")
    with sa.create_engine(sqlite_url).connect() as conn:
        rows = conn.execute(
            sa.text(
                "select event_type, model_name, version, previous_version, actor, reason from model_events"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("rollout_failed", "rakuten_classifier", "2", "1", "operator", "timed out after 600s"),
        ("rollback", "rakuten_classifier", "1", "2", "operator", "timed out after 600s"),
    ]


def test_no_database_url_skips_the_row_with_a_log_line(caplog, monkeypatch):
    monkeypatch.delenv("RAKUTEN_DATABASE_URL", raising=False)
    with caplog.at_level(logging.INFO, logger="rakuten_operator"):
        ModelRollout("classifier", "rakuten", cluster=None, notify=lambda *a: None)._record(
            "rollback", SPEC, version="1"
        )
    assert "RAKUTEN_DATABASE_URL is not set" in caplog.text


def test_a_broken_database_never_stops_a_rollback(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'data.db'}"
    with caplog.at_level(logging.WARNING, logger="rakuten_operator"):
        rollout(url)._record("rollback", SPEC, version="1")
    assert "could not record model event rollback" in caplog.text
