"""Reading a catalogue to score, one chunk at a time: an X file in the official CSV layout, or Parquet.

A catalogue is first made local (an ``s3://`` object is downloaded to a temporary folder) while
its sha256 is computed and, for CSV, its bytes checked as UTF-8: the digest names the input in
the work manifest, so a resumed run knows it reads the same bytes. Chunks then come from the
loader's own reader (``iter_products``) with its errors (file, line, problem), or from Parquet
record batches checked the same way (row numbers instead of lines).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rakuten_mlops import s3
from rakuten_mlops.data.sources import digest_checking_utf8, iter_products
from rakuten_mlops.errors import DataValidationError

READ_BLOCK_BYTES = 8 << 20
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
PARQUET_COLUMNS = ("productid", "designation", "description")


def format_of(location: str) -> str:
    """``csv`` or ``parquet`` from a path's or URL's extension; anything else is refused."""
    suffix = Path(location.rstrip("/")).suffix.lower()
    if suffix not in FORMATS:
        raise DataValidationError(
            location, "unknown format: name the file *.csv (official X layout) or *.parquet"
        )
    return FORMATS[suffix]


@dataclass(frozen=True)
class Catalogue:
    """A local copy of the input: where it came from, its format and its sha256."""

    location: str  # as the user named it: errors cite it
    path: Path
    format: str
    digest: str

    def chunks(self, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, float]]:
        """Frames of ``chunk_rows`` products (the last may be shorter: productid, designation,
        description), each with the share of the input read so far."""
        if self.format == "csv":
            size = max(1, self.path.stat().st_size)
            with self.path.open(encoding="utf-8-sig", newline="") as text:
                for frame in iter_products(self.location, text, chunk_rows):
                    yield frame[["productid", "designation", "description"]], text.buffer.tell() / size
        else:
            yield from _parquet_chunks(self.location, self.path, chunk_rows)


def open_catalogue(location: str, folder: Path) -> Catalogue:
    """The catalogue at ``location`` (a local path or ``s3://BUCKET/KEY``), copied into ``folder`` if remote."""
    kind = format_of(location)
    if location.startswith("s3://"):
        path = folder / f"input.{kind}"
        blocks = _download(location, path)
    else:
        path = Path(location)
        if not path.is_file():
            raise DataValidationError(location, "no such file")
        blocks = _file_blocks(path)
    if kind == "csv":
        digest = digest_checking_utf8(location, blocks)
    else:
        sha = hashlib.sha256()
        for block in blocks:
            sha.update(block)
        digest = sha.hexdigest()
    return Catalogue(location, path, kind, digest)


def _file_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while block := file.read(READ_BLOCK_BYTES):
            yield block


def _download(location: str, path: Path) -> Iterator[bytes]:
    """Stream the object into ``path``, yielding its blocks as they arrive (one block in memory)."""
    url, key = s3.object_url(location)
    with path.open("wb") as file:
        for block in s3.stream_object(url, key, READ_BLOCK_BYTES):
            file.write(block)
            yield block


def _parquet_chunks(location: str, path: Path, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, float]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataValidationError(location, f"not a readable Parquet file ({exc})") from None
    schema = parquet.schema_arrow
    missing = [c for c in ("productid", "designation") if c not in schema.names]
    if missing:
        raise DataValidationError(
            location, f"missing column(s) {', '.join(missing)}; columns are {', '.join(schema.names)}"
        )
    if not pa.types.is_integer(schema.field("productid").type):
        raise DataValidationError(location, f"productid is {schema.field('productid').type}, not integers")
    columns = [c for c in PARQUET_COLUMNS if c in schema.names]
    total = max(1, parquet.metadata.num_rows)
    first_row = 0
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:  # row groups may end batches early: re-cut to exact chunks
            table = pa.Table.from_batches(pending)
            yield (
                _checked(location, table.slice(0, chunk_rows).to_pandas(), first_row),
                (first_row + chunk_rows) / total,
            )
            first_row += chunk_rows
            rest = table.slice(chunk_rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield _checked(location, pa.Table.from_batches(pending).to_pandas(), first_row), 1.0


def _checked(location: str, frame: pd.DataFrame, first_row: int) -> pd.DataFrame:
    """The Parquet rows checked as the loader checks X: an id and a designation on every row."""
    for column in ("productid", "designation"):
        empty = frame[column].isna() if column == "productid" else ~_has_text(frame[column])
        if empty.any():
            row = first_row + int(empty.to_numpy().argmax()) + 1
            raise DataValidationError(location, f"empty {column} at row {row}")
    if "description" not in frame.columns:
        frame["description"] = ""
    return pd.DataFrame(
        {
            "productid": frame["productid"].astype("int64"),
            "designation": frame["designation"].astype(str),
            "description": frame["description"].fillna("").astype(str),
        }
    )


def _has_text(values: pd.Series) -> pd.Series:
    return values.notna() & (values.astype(str).str.strip() != "")
