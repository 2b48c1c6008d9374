"""A rollback whose alias move or commit fails leaves no tag saying it happened.

Real parts: the session's ``mlflow server`` (SQLite store) and a Postgres data database. The
failures are real too: a trigger in the MLflow server's own store refuses the alias write for
this test's model (the server answers 500 to the move), or a deferred constraint trigger on
``model_events`` makes the Postgres commit fail after the alias moved.
"""

from __future__ import annotations

import sqlite3

import pytest

from tests.support import MlflowServer
from tests.support.paths import isolated_platform_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def two_versions(mlflow_server: MlflowServer, pg_url: str, tmp_path, monkeypatch):
    """Settings of a model of its own with versions 1 (in production, recorded) and 2, both
    registered from an empty run (no training: the move is what is tested)."""
    from rakuten_mlops.settings import Settings, get_settings
    from rakuten_mlops.training.registry import record_unrecorded_move

    for key, value in isolated_platform_env("rb", tmp_path / "home", pg_url, mlflow_server.uri).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = Settings()
    client = mlflow_server.client()
    run = client.create_run(client.create_experiment(settings.training_experiment))
    client.set_terminated(run.info.run_id)
    client.create_registered_model(settings.registered_model)
    for _ in range(2):
        client.create_model_version(
            settings.registered_model, f"runs:/{run.info.run_id}/model", run.info.run_id
        )
    client.set_registered_model_alias(settings.registered_model, settings.production_alias, "1")
    assert record_unrecorded_move(settings) == "1"  # the history starts at version 1
    yield settings
    get_settings.cache_clear()


def _refuse_alias_writes(server: MlflowServer, model: str) -> None:
    with sqlite3.connect(server.root / "mlflow.db") as store:
        for op in ("INSERT", "UPDATE"):
            store.execute(
                f"CREATE TRIGGER refuse_{op.lower()}_{model} BEFORE {op} ON registered_model_aliases "
                f"WHEN NEW.name = '{model}' BEGIN SELECT RAISE(ABORT, 'alias writes refused'); END"
            )


def _fail_commits_of_events(pg_url: str) -> None:
    from sqlalchemy import create_engine

    from rakuten_mlops.db import upgrade

    upgrade(pg_url)
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'commit refused'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON model_events "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_event()"
        )
    engine.dispose()


@pytest.mark.parametrize("failing", ["alias move", "commit"])
def test_a_failed_rollback_tags_nothing(two_versions, mlflow_server, pg_url, failing):
    from rakuten_mlops.registry import ModelRegistry
    from rakuten_mlops.training.registry import ROLLBACK_TAG, rollback

    settings = two_versions
    if failing == "alias move":
        _refuse_alias_writes(mlflow_server, settings.registered_model)
    else:
        _fail_commits_of_events(pg_url)
    with pytest.raises(Exception, match="alias writes refused|INTERNAL_ERROR|commit refused"):
        rollback(settings, to="2", reason="the canary misbehaved")

    registry = ModelRegistry(settings)
    assert ROLLBACK_TAG not in registry.version("2").tags  # no claim of a rollback that is not recorded
    found = _registry_violations(settings)
    if failing == "alias move":
        assert registry.production_version() == "1" and found == []
    else:  # the alias moved, its row did not commit: doctor names the move without its row
        assert registry.production_version() == "2"
        assert len(found) == 1 and "without its model_events row" in found[0], found


def _registry_violations(settings) -> list[str]:
    """Doctor's registry violations but the missing training tags (these versions were not trained)."""
    from rakuten_mlops.doctor import check

    return [
        f.what
        for f in check(settings).violations
        if f.area == "registry" and "lacks its training tags" not in f.what
    ]


def test_a_rollback_tags_its_target_once_recorded(two_versions):
    from rakuten_mlops.registry import ModelRegistry
    from rakuten_mlops.training.registry import ROLLBACK_TAG, rollback

    settings = two_versions
    rollback(settings, to="2", reason="the canary misbehaved")
    registry = ModelRegistry(settings)
    assert registry.production_version() == "2"
    assert registry.version("2").tags[ROLLBACK_TAG] == "the canary misbehaved"
    assert _registry_violations(settings) == []
