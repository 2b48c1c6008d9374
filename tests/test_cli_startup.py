"""The CLI starts without the heavy libraries: each command imports what it needs when it runs, so
`rakuten-mlops db upgrade` or `--help` (and every step of a workflow) does not pay for the others."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "numpy",
    "pandas",
    "sklearn",
    "scipy",
    "mlflow",
    "evidently",
    "fastapi",
    "streamlit",
    "kopf",
    "boto3",
)


def test_importing_the_cli_loads_no_heavy_library():
    code = f"import sys, rakuten_mlops.cli; print(*[m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], "imported when the CLI starts"
