"""``rakuten-mlops ui``: the Streamlit control room (``streamlit run`` on ``ui/app.py``)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

APP = Path(__file__).with_name("app.py")


def streamlit_command(host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line: headless, no telemetry, no file watcher."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless=true",
        f"--server.address={host}",
        f"--server.port={port}",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=viewer",
        "--global.developmentMode=false",
        "--theme.base=light",
    ]


def streamlit_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for Streamlit; HOME moves to a temporary folder when it is not writable.

    Streamlit writes ``~/.streamlit`` (machine id, credentials): on a read-only root file system
    (the chart's UI pod) a writable HOME under /tmp keeps it working.
    """
    env = dict(os.environ if environ is None else environ)
    home = Path(env.get("HOME") or "/nonexistent")
    if not (home.is_dir() and os.access(home, os.W_OK)):
        env["HOME"] = tempfile.mkdtemp(prefix="rakuten-ui-home-")
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    return env


def ui(
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8501,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 in a container).")] = "127.0.0.1",
) -> None:
    """Run the Streamlit control room (pages: Overview, Data, Training, Predict, Monitoring)."""
    from rakuten_mlops.cli import console, print_backends

    print_backends()
    console.print(f"control room on http://{host}:{port}")
    sys.stdout.flush()
    command = streamlit_command(host, port)
    os.execve(command[0], command, streamlit_env())  # Streamlit takes this process's signals


def register(app: typer.Typer) -> None:
    """Add ``ui`` to the ``rakuten-mlops`` command line."""
    app.command("ui")(ui)
