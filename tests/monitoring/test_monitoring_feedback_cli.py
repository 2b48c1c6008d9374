"""``rakuten-mlops evaluate-feedback`` as a user types it (in-process, embedded SQLite home)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rakuten_mlops.cli import app


def test_evaluate_feedback_refuses_a_bad_window_and_says_when_nothing_is_labelled(settings):
    bad = CliRunner().invoke(app, ["evaluate-feedback", "--window", "3x"])
    assert bad.exit_code == 2 and "window '3x' is not like 7d" in bad.output
    empty = CliRunner().invoke(app, ["evaluate-feedback", "--window", "2d"])
    assert empty.exit_code == 0, empty.output
    assert "no labelled prediction in this window: nothing evaluated" in empty.output
    as_json = CliRunner().invoke(app, ["evaluate-feedback", "--json"])
    payload = json.loads(as_json.stdout)
    assert (payload["window"], payload["labels"], payload["versions"]) == ("1d", 0, [])
