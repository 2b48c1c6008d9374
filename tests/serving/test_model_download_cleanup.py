"""Loading a registered model leaves no copy of it on disk: the API loads one at every swap
(alias poll, reload), so a copy per load would fill a pod's disk over the days (the soak of
``make chaos`` swaps every two minutes). Real MLflow server, models proxied through it."""

from __future__ import annotations

import tempfile

from rakuten_mlops.model.loading import load_pipeline
from tests.serving.factories import REALISTIC_PRODUCTS


def test_a_loaded_model_leaves_no_download_behind(registered_model, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where MLflow and we create temporary dirs
    import pandas as pd

    frame = pd.DataFrame(REALISTIC_PRODUCTS[:2]).fillna("")[["designation", "description"]]
    for version in registered_model.versions:
        pipeline = load_pipeline(f"models:/{registered_model.name}/{version}")
        assert len(pipeline.predict_proba(frame)) == 2  # loaded whole: usable once the files are gone

    assert list(scratch.iterdir()) == []
