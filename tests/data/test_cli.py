"""The CLI as a user runs it: generate, load, status (human and JSON), bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MLFLOW_"))}
    env["RAKUTEN_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "rakuten_mlops.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generate_load_and_status(tmp_path: Path):
    home = tmp_path / "home"
    gen = run(home, "data", "generate", "--rows", "2000", "--seed", "4", "--out", str(tmp_path / "src"))
    assert gen.returncode == 0, gen.stderr
    assert "generated 2,000 products" in gen.stdout
    first = run(home, "data", "load", "--source", str(tmp_path / "src"))
    assert first.returncode == 0, first.stderr
    assert "backends: data=sqlite:///" in first.stdout
    assert "800 of 2,000 products" in first.stdout and "(40%)" in first.stdout
    second = run(home, "data", "load", "--source", str(tmp_path / "src"), "--batch-rows", "500")
    assert "1,300 of 2,000" in second.stdout
    status = run(home, "data", "status", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["total_products"] == 1300
    assert doc["sources"][0]["loaded_share"] == 0.65
    assert doc["backlog_rows"] == 1300 and doc["production_version"] is None
    assert sum(doc["rows_per_class"].values()) == 1300
    human = run(home, "data", "status")
    assert "1,300 products loaded" in human.stdout and "Autour de la piscine" in human.stdout


def test_bad_input_is_one_clear_line_and_exit_code_2(tmp_path: Path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "X_train_update.csv").write_text("a;b;c\n1;2;3\n")
    (tmp_path / "src" / "Y_train_CVw08PX.csv").write_text(",prdtypecode\n0,10\n")
    res = run(tmp_path / "home", "data", "load", "--source", str(tmp_path / "src"))
    assert res.returncode == 2
    assert "error:" in res.stderr and "wrong delimiter" in res.stderr
    assert "Traceback" not in res.stderr


def test_an_unreachable_database_is_one_clear_line_with_hidden_password(tmp_path: Path):
    env_url = "postgresql+psycopg2://loader:s3cret@127.0.0.1:1/rakuten"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MLFLOW_"))}
    env.update(RAKUTEN_HOME=str(tmp_path / "home"), RAKUTEN_DATABASE_URL=env_url)
    res = subprocess.run(
        [sys.executable, "-m", "rakuten_mlops.cli", "data", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 5
    assert "cannot reach or migrate the data database" in res.stderr and "RAKUTEN_DATABASE_URL" in res.stderr
    assert "s3cret" not in res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_version_and_help_need_no_subcommand(tmp_path: Path):
    from rakuten_mlops import __version__

    assert run(tmp_path, "--version").stdout.strip() == __version__
    helped = run(tmp_path, "--help").stdout
    for command in (
        "data",
        "train",
        "promote",
        "rollback",
        "models",
        "serve",
        "drift",
        "decide",
        "operator",
        "ui",
    ):
        assert f" {command} " in helped
