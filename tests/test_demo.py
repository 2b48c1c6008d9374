"""`make demo` as a newcomer runs it: the whole pipeline on the embedded default, start to finish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.e2e
def test_demo_runs_the_whole_pipeline(tmp_path: Path):
    home = tmp_path / "demo-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAKUTEN_", "MLFLOW_"))}
    env.update(RAKUTEN_HOME=str(home), COLUMNS="120")
    res = subprocess.run(
        [sys.executable, "-m", "rakuten_mlops.demo"], env=env, capture_output=True, text=True, timeout=900
    )
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-3000:]
    for step in range(1, 10):
        assert f"Step {step}/9" in out
    assert "8,000 of 20,000 products" in out  # 40% first
    first = json.loads((home / "train-1.json").read_text())
    assert first["decision"] == "promoted" and 0.75 <= first["f1_weighted"] <= 0.95
    second = json.loads((home / "train-2.json").read_text())
    assert second["decision"] in {"promoted", "rejected"} and "reason" in second
    assert "Autour de la piscine (2583)" in out  # the pool cover is classified as a pool product over HTTP
    assert '"registry_reachable": true' in out
    decision = json.loads((home / "decision.json").read_text())
    assert decision["retrain"] is True  # the vocabulary-drifted traffic is caught
    assert list((home / "reports").rglob("*.html")), "the drift step leaves an HTML report"
    assert "done in" in out
