"""Reading the official layout: real rows, and every kind of bad input named by file, line and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from rakuten_mlops.data.sources import read_source
from rakuten_mlops.errors import DataValidationError
from tests.data.factories import write_files
from tests.support import SAMPLE_DIR

GOOD_X = (
    ",designation,description,productid,imageid\n"
    '0,Piscine Hors Sol Intex,"Bâche <br />incluse &amp; pompe",101,9001\n'
    "1,Le Journal De Mickey N° 12,,102,9002\n"
    '2,Peluche Donald,"sur deux\nlignes",103,9003\n'
)
GOOD_Y = ",prdtypecode\n0,2583\n1,2280\n2,1280\n"


def test_reads_the_real_sample_rows():
    data = read_source(SAMPLE_DIR)
    frame = data.frame
    assert len(frame) == 429
    assert frame["prdtypecode"].nunique() == 27
    # the official row index is kept, and empty descriptions stay empty strings
    assert frame["row_index"].iloc[0] == 2
    assert (frame["description"] == "").sum() == 146
    assert frame["productid"].is_unique


def test_multiline_records_keep_their_physical_line(tmp_path: Path):
    frame = read_source(write_files(tmp_path, GOOD_X, GOOD_Y)).frame
    assert frame["line"].tolist() == [2, 3, 4]
    assert frame["description"].iloc[2] == "sur deux\nlignes"


BAD_CASES = [
    pytest.param(
        GOOD_X.replace("imageid", "image"),
        GOOD_Y,
        "X_train_update.csv, line 1",
        "missing column(s) imageid",
        id="missing-column",
    ),
    pytest.param(
        GOOD_X.replace(",", ";"),
        GOOD_Y,
        "X_train_update.csv, line 1",
        "wrong delimiter",
        id="wrong-delimiter",
    ),
    pytest.param(
        GOOD_X,
        GOOD_Y.replace("2280", "9999"),
        "Y_train_CVw08PX.csv, line 3",
        "unknown prdtypecode 9999",
        id="unknown-label",
    ),
    pytest.param(
        GOOD_X.replace(",102,", ",101,"),
        GOOD_Y,
        "Y_train_CVw08PX.csv, line 3",
        "productid 101 appears again with another label",
        id="productid-relabelled",
    ),
    pytest.param(
        GOOD_X,
        ",prdtypecode\n0,2583\n1,2280\n",
        "X has 3 rows but Y has 2",
        "same products",
        id="x-y-lengths",
    ),
    pytest.param(
        GOOD_X.replace(",103,", ",abc,"),
        GOOD_Y,
        "X_train_update.csv, line 4",
        "productid 'abc'",
        id="non-integer-productid",
    ),
    pytest.param(
        GOOD_X.replace("Peluche Donald", ""),
        GOOD_Y,
        "X_train_update.csv, line 4",
        "empty designation",
        id="empty-designation",
    ),
]


@pytest.mark.parametrize(("x_text", "y_text", "where", "problem"), BAD_CASES)
def test_bad_files_are_refused_with_file_line_and_problem(tmp_path: Path, x_text, y_text, where, problem):
    with pytest.raises(DataValidationError) as info:
        read_source(write_files(tmp_path, x_text, y_text))
    assert where in str(info.value)
    assert problem in str(info.value)


def test_non_utf8_bytes_are_refused_with_their_line(tmp_path: Path):
    folder = write_files(tmp_path, GOOD_X, GOOD_Y)
    x = folder / "X_train_update.csv"
    x.write_bytes(x.read_bytes().replace(b"Peluche", "Pel\xfcche".encode("latin-1")))
    with pytest.raises(DataValidationError) as info:
        read_source(folder)
    assert "X_train_update.csv, line 4" in str(info.value)
    assert "not UTF-8" in str(info.value)


def test_missing_files_are_named(tmp_path: Path):
    (tmp_path / "X_train_update.csv").write_text(GOOD_X)
    with pytest.raises(DataValidationError, match="no Y file"):
        read_source(tmp_path)
