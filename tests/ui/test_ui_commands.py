"""`rakuten-mlops ui`: the command line it runs and the environment it gives Streamlit."""

from __future__ import annotations

import os
import stat

import pytest
from typer.testing import CliRunner

from rakuten_mlops.cli import app
from rakuten_mlops.ui.commands import APP, streamlit_command, streamlit_env


def test_ui_is_a_subcommand_with_port_and_host():
    result = CliRunner().invoke(app, ["ui", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output and "--host" in result.output
    assert "control room" in result.output


def test_streamlit_runs_the_app_headless_on_the_given_address():
    command = streamlit_command("0.0.0.0", 8599)
    assert command[1:5] == ["-m", "streamlit", "run", str(APP)]
    assert APP.is_file()
    for flag in (
        "--server.headless=true",
        "--server.address=0.0.0.0",
        "--server.port=8599",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
    ):
        assert flag in command


def test_a_writable_home_is_kept(tmp_path):
    env = streamlit_env({"HOME": str(tmp_path), "PATH": "/usr/bin"})
    assert env["HOME"] == str(tmp_path)
    assert env["PATH"] == "/usr/bin"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere: covered by the missing-HOME case")
def test_a_read_only_home_moves_to_a_temporary_folder(tmp_path):
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    env = streamlit_env({"HOME": str(home)})
    assert env["HOME"] != str(home) and os.access(env["HOME"], os.W_OK)


def test_a_missing_home_moves_to_a_writable_temporary_folder():
    env = streamlit_env({"HOME": "/nonexistent/home/of/the/pod"})
    assert env["HOME"].startswith(("/tmp", os.environ.get("TMPDIR", "/tmp")))
    assert os.access(env["HOME"], os.W_OK)
    assert env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"
