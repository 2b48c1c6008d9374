"""Batch scoring: outputs, versions, agreement with the API, resume after a SIGKILL, bad input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from rakuten_mlops.data.categories import category_name
from rakuten_mlops.errors import DataValidationError, ModelNotFoundError
from rakuten_mlops.scoring.job import score_catalogue
from tests.scoring.factories import CATALOGUE_ROWS, CHUNK_ROWS
from tests.support import CLI


def x_rows(x_path: Path) -> pd.DataFrame:
    frame = pd.read_csv(x_path, index_col=0, keep_default_na=False)
    return frame


def files_in(folder: Path) -> list[str]:
    """Every file and folder left in ``folder``, hidden ones included (the RAKUTEN_HOME aside)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "home")


def assert_scored(out: pd.DataFrame, x_path: Path, version: str) -> None:
    expected_ids = x_rows(x_path)["productid"].tolist()
    assert out["productid"].tolist() == expected_ids  # every product, in input order
    assert set(out["model_version"]) == {version}
    assert (out["category"] == [category_name(c) for c in out["prdtypecode"]]).all()
    assert (out["prdtypecode"] == out["top1_prdtypecode"]).all()
    assert (out["confidence"] == out["top1_probability"]).all()
    assert (out["top1_probability"] >= out["top2_probability"]).all()
    assert (out["top2_probability"] >= out["top3_probability"]).all()
    assert ((out["confidence"] > 0) & (out["confidence"] <= 1)).all()


def test_csv_catalogue_to_parquet_and_csv_agrees_with_the_api(registry, catalogue, tmp_path):
    from fastapi.testclient import TestClient

    from rakuten_mlops.serving import create_app

    settings = registry.settings(tmp_path / "home")
    seen = []
    result = score_catalogue(
        settings, str(catalogue), str(tmp_path / "out.parquet"), chunk_rows=CHUNK_ROWS, on_chunk=seen.append
    )
    assert (result.rows, result.chunks, result.reused_chunks) == (CATALOGUE_ROWS, 4, 0)
    assert [c.rows for c in seen] == [300, 300, 300, 100] and seen[-1].read_share == 1.0
    parquet = pd.read_parquet(tmp_path / "out.parquet")
    assert list(parquet.columns) == [
        "productid", "prdtypecode", "category", "confidence",
        "top1_prdtypecode", "top1_probability", "top2_prdtypecode", "top2_probability",
        "top3_prdtypecode", "top3_probability", "model_version",
    ]  # fmt: skip
    assert_scored(parquet, catalogue, registry.production)

    score_catalogue(settings, str(catalogue), str(tmp_path / "out.csv"), chunk_rows=CHUNK_ROWS)
    csv = pd.read_csv(tmp_path / "out.csv", dtype={"model_version": str})
    pd.testing.assert_frame_equal(csv, parquet, check_exact=False, rtol=1e-12)
    assert files_in(tmp_path) == ["out.csv", "out.parquet"]  # no work left

    rows = x_rows(catalogue).iloc[:200]
    items = [
        {"designation": d, "description": e, "productid": int(p)}
        for d, e, p in zip(rows["designation"], rows["description"], rows["productid"], strict=True)
    ]
    with TestClient(create_app(settings, prediction_log=False)) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        answer = client.post("/predict/batch", json={"items": items, "top_k": 3})
    assert answer.status_code == 200, answer.text
    api = answer.json()
    predictions = api["predictions"] if isinstance(api, dict) else api
    assert [p["prdtypecode"] for p in predictions] == parquet["prdtypecode"].iloc[:200].tolist()
    assert [p["confidence"] for p in predictions] == pytest.approx(parquet["confidence"].iloc[:200].tolist())
    assert {p["model_version"] for p in predictions} == {registry.production}


def test_version_option_scores_with_that_version(registry, catalogue, tmp_path):
    settings = registry.settings(tmp_path / "home")
    result = score_catalogue(settings, str(catalogue), str(tmp_path / "v.parquet"), version=registry.other)
    out = pd.read_parquet(tmp_path / "v.parquet")
    assert result.model_version == registry.other
    assert_scored(out, catalogue, registry.other)
    frame = x_rows(catalogue)
    expected = registry.pipelines[registry.other].predict(frame[["designation", "description"]])
    assert out["prdtypecode"].tolist() == expected.tolist()
    production = registry.pipelines[registry.production].predict(frame[["designation", "description"]])
    assert (expected != production).any()  # the versions differ: the check above can tell them apart
    with pytest.raises(ModelNotFoundError, match="no version 999"):
        score_catalogue(settings, str(catalogue), str(tmp_path / "x.parquet"), version="999")
    assert not (tmp_path / "x.parquet").exists()


KILLED_RUN = """
import os, signal, sys
from rakuten_mlops.scoring.job import score_catalogue
from rakuten_mlops.settings import Settings

def die_after(done):
    if done.index + 1 == {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)  # a crash: no cleanup of any kind runs

score_catalogue(Settings(), sys.argv[1], sys.argv[2], chunk_rows={chunk_rows}, on_chunk=die_after)
"""


def test_a_killed_run_resumes_without_scoring_finished_chunks(registry, catalogue, tmp_path):
    output = tmp_path / "out.parquet"
    env = {**os.environ, **registry.env(tmp_path / "home")}
    script = textwrap.dedent(KILLED_RUN.format(kill_after=2, chunk_rows=CHUNK_ROWS))
    killed = subprocess.run(
        [sys.executable, "-c", script, str(catalogue), str(output)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=180, start_new_session=True,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not output.exists()
    work = tmp_path / ".out.parquet.work"
    parts = sorted(p.name for p in work.glob("*/part-*.parquet"))
    assert parts == ["part-000000.parquet", "part-000001.parquet"]
    kept = {p: p.stat().st_mtime_ns for p in work.glob("*/part-*.parquet")}

    seen = []
    result = score_catalogue(
        registry.settings(tmp_path / "home"), str(catalogue), str(output), chunk_rows=CHUNK_ROWS,
        on_chunk=seen.append,
    )  # fmt: skip
    assert [c.reused for c in seen] == [True, True, False, False]
    assert result.reused_chunks == 2
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items() if p.exists())
    assert not work.exists()
    resumed = pd.read_parquet(output)
    fresh = tmp_path / "fresh.parquet"
    score_catalogue(registry.settings(tmp_path / "home"), str(catalogue), str(fresh), chunk_rows=CHUNK_ROWS)
    pd.testing.assert_frame_equal(resumed, pd.read_parquet(fresh))


def test_a_new_model_version_does_not_reuse_the_parts_of_another(registry, catalogue, tmp_path):
    from rakuten_mlops.scoring.job import run_key

    a = run_key("d" * 64, registry.name, registry.production, CHUNK_ROWS, 3)
    assert a != run_key("d" * 64, registry.name, registry.other, CHUNK_ROWS, 3)
    assert a != run_key("e" * 64, registry.name, registry.production, CHUNK_ROWS, 3)
    assert a != run_key("d" * 64, registry.name, registry.production, CHUNK_ROWS + 1, 3)


def _bad(text: str, replace: str, by: str, at: int = 0) -> bytes:
    lines = text.split("\n")
    lines[at] = lines[at].replace(replace, by, 1) if replace else by
    return "\n".join(lines).encode()


@pytest.fixture(scope="module")
def catalogue_text(catalogue) -> str:
    return catalogue.read_text(encoding="utf-8")


BAD_INPUT = [
    pytest.param("header", "productid", "product_id", 0, "line 1: missing column(s) productid", id="missing-column"),
    pytest.param("header", "", ";designation;description;productid;imageid", 0, "wrong delimiter", id="delimiter"),
    pytest.param("late-row", "", "950,,,123,456", -300, "empty designation", id="empty-designation-late"),
    pytest.param("late-row", "", "951,Livre,,12ab,456", -300, "productid '12ab' is not an integer", id="bad-productid-late"),
    pytest.param("late-row", "", "952,Livre,desc", -300, "3 fields where the header has 5", id="short-row-late"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "replace", "by", "at", "message"), BAD_INPUT)
def test_bad_csv_is_refused_with_the_loaders_error_and_no_output(
    registry, catalogue_text, tmp_path, where, replace, by, at, message
):
    source = tmp_path / "X_bad.csv"
    lines = catalogue_text.rstrip("\n").split("\n")
    # a late row: after the first chunks were scored and kept
    index = at if where == "header" else len(lines) + at
    lines[index] = lines[index].replace(replace, by, 1) if replace else by
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "out.parquet"
    output.write_bytes(b"an earlier run's output")  # must survive untouched
    seen = []
    with pytest.raises(DataValidationError, match=re.escape(message)) as error:
        score_catalogue(
            registry.settings(tmp_path / "home"), str(source), str(output), chunk_rows=CHUNK_ROWS,
            workers=1, on_chunk=seen.append,
        )  # fmt: skip
    assert str(source) in str(error.value)
    if where == "late-row":
        assert ", line " in str(error.value)
        assert seen  # chunks were scored before the bad row was reached
    assert output.read_bytes() == b"an earlier run's output"
    assert files_in(tmp_path) == ["X_bad.csv", "out.parquet"]


def test_the_cli_shows_progress_on_stderr_and_refuses_non_utf8_bytes_by_line(
    registry, catalogue, catalogue_text, tmp_path
):
    env = {**os.environ, **registry.env(tmp_path / "home")}
    good = subprocess.run(
        [*CLI, "score", "--input", str(catalogue), "--output", str(tmp_path / "ok.csv"), "--chunk-rows", "400",
         "--version", registry.other, "--workers", "1"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    progress = [line for line in good.stderr.splitlines() if line.startswith("chunk ")]
    assert progress[0].startswith("chunk 1: 400 products scored in") and len(progress) == 3
    assert progress[-1].endswith("1,000 done, 100% of the input read")
    assert f"scored 1,000 products in 3 chunk(s) with {registry.name} version {registry.other}" in good.stdout
    assert set(pd.read_csv(tmp_path / "ok.csv")["model_version"].astype(str)) == {registry.other}

    source = tmp_path / "X_latin1.csv"
    lines = catalogue_text.rstrip("\n").split("\n")
    lines[700] = "700,Chaise de jardin \udce9t\udce9,,999001,1"
    source.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    env = {**os.environ, **registry.env(tmp_path / "home")}
    run = subprocess.run(
        [*CLI, "score", "--input", str(source), "--output", str(tmp_path / "out.csv")],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert f"{source}, line 701: bytes that are not UTF-8" in " ".join(run.stderr.split())
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out.csv").exists()


def test_parquet_input_and_its_errors(registry, catalogue, tmp_path):
    frame = x_rows(catalogue)[["productid", "designation", "description"]]
    frame.to_parquet(tmp_path / "catalogue.parquet", row_group_size=250)
    settings = registry.settings(tmp_path / "home")
    result = score_catalogue(
        settings, str(tmp_path / "catalogue.parquet"), str(tmp_path / "out.csv"), chunk_rows=CHUNK_ROWS
    )
    assert result.chunks == 4
    out = pd.read_csv(tmp_path / "out.csv", dtype={"model_version": str})
    assert_scored(out, catalogue, registry.production)

    broken = frame.copy()
    broken.loc[broken.index[640], "designation"] = ""
    broken.to_parquet(tmp_path / "broken.parquet")
    with pytest.raises(DataValidationError, match="empty designation at row 641"):
        score_catalogue(settings, str(tmp_path / "broken.parquet"), str(tmp_path / "b.csv"))
    frame.drop(columns="designation").to_parquet(tmp_path / "nodes.parquet")
    with pytest.raises(DataValidationError, match="missing column"):
        score_catalogue(settings, str(tmp_path / "nodes.parquet"), str(tmp_path / "b.csv"))
    with pytest.raises(DataValidationError, match=r"unknown format: name the file \*.csv"):
        score_catalogue(settings, str(tmp_path / "catalogue.parquet"), str(tmp_path / "b.json"))
    assert not (tmp_path / "b.csv").exists()


def test_a_work_folder_given_by_the_user_keeps_everything_but_the_runs_own_parts(
    registry, catalogue, tmp_path
):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "keep.txt").write_text("someone else's file")
    score_catalogue(
        registry.settings(tmp_path / "home"), str(catalogue), str(tmp_path / "out.parquet"),
        chunk_rows=CHUNK_ROWS, work=str(shared),
    )  # fmt: skip
    assert files_in(shared) == ["keep.txt"]
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == CATALOGUE_ROWS
