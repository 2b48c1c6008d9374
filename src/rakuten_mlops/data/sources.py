"""Reading the official Rakuten files (``X_train_update.csv`` + ``Y_train_CVw08PX.csv``).

The shared column schema of products lives here: training, serving and drift all use
``TEXT_COLUMNS``. Every problem is reported with file, line and what is wrong, and
nothing is returned for a file with any problem.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import hashlib
import io
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pandas as pd

from rakuten_mlops.data.categories import load_categories
from rakuten_mlops.errors import DataValidationError

X_FILE = "X_train_update.csv"
Y_FILE = "Y_train_CVw08PX.csv"
X_COLUMNS = ("designation", "description", "productid", "imageid")
Y_COLUMNS = ("prdtypecode",)
TEXT_COLUMNS = ("designation", "description")
MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class SourceData:
    """A validated source: one row per product, in file order, with its physical line in X."""

    frame: pd.DataFrame  # columns: row_index, designation, description, productid, imageid, prdtypecode, line
    x_path: str  # where the files were read: a local path or an s3:// URL, as errors name them
    y_path: str
    digest: str  # sha256 of both files: identifies the source across runs


def pick_source_files(where: str, names: Iterable[str]) -> tuple[str, str]:
    """The X and Y file names among ``names``: the official names, else the only ``X_*.csv`` / ``Y_*.csv``."""
    names = set(names)
    found = []
    for prefix, official in (("X", X_FILE), ("Y", Y_FILE)):
        if official in names:
            found.append(official)
            continue
        candidates = sorted(n for n in names if fnmatch.fnmatchcase(n, f"{prefix}_*.csv"))
        if len(candidates) != 1:
            what = "no" if not candidates else f"{len(candidates)} candidate"
            raise DataValidationError(where, f"{what} {prefix} file ({official} or one {prefix}_*.csv)")
        found.append(candidates[0])
    return found[0], found[1]


def find_source_files(source: Path) -> tuple[Path, Path]:
    """The X and Y files of a local folder (see ``pick_source_files``)."""
    source = Path(source)
    if not source.is_dir():
        raise DataValidationError(str(source), "not a folder with X_*.csv and Y_*.csv files")
    x_name, y_name = pick_source_files(str(source), (p.name for p in source.iterdir() if p.is_file()))
    return source / x_name, source / y_name


def _decode(path: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(
            path, exc.start, raw[exc.start : exc.start + 4], raw[: exc.start].count(b"\n") + 1
        ) from exc


def _not_utf8(path: str, offset: int, bad: bytes, line: int) -> DataValidationError:
    return DataValidationError(
        path, f"bytes that are not UTF-8 at byte {offset} ({bad!r}); re-encode the file as UTF-8", line
    )


def digest_checking_utf8(path: str, chunks: Iterable[bytes]) -> str:
    """sha256 of a file read in ``chunks`` while checking it is UTF-8 (the error names byte and line)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0  # bytes and line breaks fed to the decoder before this chunk
    for chunk in chunks:
        digest.update(chunk)
        pending = decoder.getstate()[0]  # an incomplete character carried over from the last chunk
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            start = offset - len(pending) + exc.start
            line = newlines + exc.object[: exc.start].count(b"\n") + 1
            raise _not_utf8(path, start, exc.object[exc.start : exc.start + 4], line) from None
        offset += len(chunk)
        newlines += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise _not_utf8(
            path, offset - len(exc.object) + exc.start, exc.object[exc.start :], newlines + 1
        ) from None
    return digest.hexdigest()


def _read_header(
    path: str, reader: Iterator[list[str]], first_line: str, expected: tuple[str, ...]
) -> tuple[int, list[int]]:
    """Check the header row; return its width and the positions of the ``expected`` columns."""
    try:
        header = next(reader)
    except StopIteration:
        raise DataValidationError(path, "the file is empty", 1) from None
    names = [h.strip() for h in header[1:]]
    missing = [c for c in expected if c not in names]
    if missing:
        for sep, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if sep in first_line and "," not in first_line:
                raise DataValidationError(
                    path,
                    f"wrong delimiter: the header is separated by {label}; the official files use commas",
                    1,
                )
        raise DataValidationError(
            path,
            f"missing column(s) {', '.join(missing)}; header has {', '.join(names) or 'nothing'}",
            1,
        )
    if header[0].strip() not in ("", "Unnamed: 0", "index"):
        raise DataValidationError(path, "the first column must be the unnamed row index", 1)
    return len(header), [names.index(c) + 1 for c in expected]


def _iter_records(
    path: str, lines: Iterable[str], expected: tuple[str, ...]
) -> Iterator[tuple[list[str], int]]:
    """CSV records after the header (row index, then the ``expected`` columns), each with the
    physical line it starts on; ``lines`` is the file's text, line by line."""
    lines = iter(lines)
    first_line = next(lines, "")
    reader = csv.reader(itertools.chain([first_line], lines))
    width, order = _read_header(path, reader, first_line.rstrip("\r\n"), expected)
    start = reader.line_num + 1
    try:
        for rec in reader:
            if rec:
                if len(rec) != width:
                    raise DataValidationError(path, f"{len(rec)} fields where the header has {width}", start)
                yield [rec[0], *(rec[i] for i in order)], start
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataValidationError(path, f"malformed CSV ({exc})", reader.line_num) from exc


def _read_records(path: str, text: str, expected: tuple[str, ...]) -> tuple[list[list[str]], list[int]]:
    """CSV records after the header, with the physical line each starts on."""
    records, lines = [], []
    for record, line in _iter_records(path, io.StringIO(text, newline=""), expected):
        records.append(record)
        lines.append(line)
    return records, lines


def _as_int(
    path: str, values: list[str], lines: list[int], column: str, required: bool = True
) -> list[int | None]:
    out: list[int | None] = []
    for value, line in zip(values, lines, strict=True):
        value = value.strip()
        if not value and not required:
            out.append(None)
            continue
        try:
            out.append(int(float(value)) if "." in value else int(value))
        except ValueError:
            raise DataValidationError(path, f"{column} {value!r} is not an integer", line) from None
    return out


def _x_frame(x_path: str, records: list[list[str]], lines: list[int]) -> pd.DataFrame:
    """The checked products of X records: integer ids, a designation on every row."""
    productid = _as_int(x_path, [r[3] for r in records], lines, "productid")
    imageid = _as_int(x_path, [r[4] for r in records], lines, "imageid", required=False)
    for rec, line in zip(records, lines, strict=True):
        if not rec[1].strip():
            raise DataValidationError(x_path, "empty designation", line)
    return pd.DataFrame(
        {
            "row_index": _as_int(x_path, [r[0] for r in records], lines, "row index"),
            "designation": [r[1] for r in records],
            "description": [r[2] for r in records],
            "productid": pd.array(productid, dtype="int64"),
            "imageid": pd.array(imageid, dtype="Int64"),
            "line": lines,
        }
    )


def iter_products(x_path: str, text: TextIO, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The products of an X file in frames of ``chunk_rows`` rows, checked as ``parse_source`` checks X.

    ``text`` is the file opened as UTF-8 text with ``newline=""``; memory holds one chunk. Columns
    as ``_x_frame``. A problem raises ``DataValidationError`` when its row is reached.
    """
    records: list[list[str]] = []
    lines: list[int] = []
    for record, line in _iter_records(x_path, text, X_COLUMNS):
        records.append(record)
        lines.append(line)
        if len(records) == chunk_rows:
            yield _x_frame(x_path, records, lines)
            records, lines = [], []
    if records:
        yield _x_frame(x_path, records, lines)


def read_source(source: Path) -> SourceData:
    """Read and validate a local folder in the official layout; raise ``DataValidationError`` on any problem."""
    x_path, y_path = find_source_files(Path(source))
    return parse_source(str(x_path), x_path.read_bytes(), str(y_path), y_path.read_bytes())


def parse_source(x_path: str, x_raw: bytes, y_path: str, y_raw: bytes) -> SourceData:
    """Validate the bytes of an X and a Y file; ``x_path``/``y_path`` name them in every error."""
    x_records, x_lines = _read_records(x_path, _decode(x_path, x_raw), X_COLUMNS)
    y_records, y_lines = _read_records(y_path, _decode(y_path, y_raw), Y_COLUMNS)
    if len(x_records) != len(y_records):
        raise DataValidationError(
            f"{x_path} / {y_path}",
            f"X has {len(x_records)} rows but Y has {len(y_records)}; they must describe the same products",
        )
    products = _x_frame(x_path, x_records, x_lines)
    y_index = _as_int(y_path, [r[0] for r in y_records], y_lines, "row index")
    for xi, yi, line in zip(products["row_index"], y_index, y_lines, strict=True):
        if xi != yi:
            raise DataValidationError(y_path, f"row index {yi} does not match X's row index {xi}", line)
    labels = _as_int(y_path, [r[1] for r in y_records], y_lines, "prdtypecode")
    known = load_categories()
    for code, line in zip(labels, y_lines, strict=True):
        if code not in known:
            raise DataValidationError(
                y_path, f"unknown prdtypecode {code} (expected one of the 27 codes)", line
            )
    products.insert(5, "prdtypecode", pd.array(labels, dtype="int64"))
    frame = products
    _check_duplicates(frame, x_path, y_path, y_lines)
    return SourceData(frame, x_path, y_path, source_digest(x_raw, y_raw))


def source_digest(x_raw: bytes, y_raw: bytes) -> str:
    """sha256 of both files: identifies a source across runs (and a landing-zone drop's contents)."""
    return hashlib.sha256(x_raw + b"\0" + y_raw).hexdigest()


def _check_duplicates(frame: pd.DataFrame, x_path: str, y_path: str, y_lines: list[int]) -> None:
    dup = frame[frame.duplicated("productid", keep=False)]
    if dup.empty:
        return
    for pid, group in dup.groupby("productid", sort=False):
        codes = group["prdtypecode"].unique()
        first, again = group.index[0], group.index[1]
        if len(codes) > 1:
            raise DataValidationError(
                y_path,
                f"productid {pid} appears again with another label ({codes[0]} at line {y_lines[first]}, "
                f"{group['prdtypecode'].iloc[1]} here)",
                y_lines[again],
            )
        raise DataValidationError(
            x_path,
            f"productid {pid} appears twice (also at line {frame['line'].iloc[first]})",
            int(frame["line"].iloc[again]),
        )
