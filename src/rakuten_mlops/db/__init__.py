"""Data database: tables, engine/session helpers and Alembic migrations."""

from rakuten_mlops.db.engine import engine_for, session_scope, upgrade
from rakuten_mlops.db.events import record_model_event

__all__ = ["engine_for", "record_model_event", "session_scope", "upgrade"]
