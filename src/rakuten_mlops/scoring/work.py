"""Where a scoring run keeps its finished chunks, and how the final output appears all at once.

The work area sits beside the output (``.NAME.work/`` in its folder, or under the same S3
prefix), one sub-folder per run key (input digest, model version, chunk size, top-k): a
``manifest.json`` naming them, and one Parquet part per finished chunk. A part is written
whole or not at all (temporary name + rename locally; a single PUT on S3), so after a crash
its presence means the chunk is done. The output file is assembled from the parts into a
temporary file, then renamed into place (local) or put in one upload (S3): a reader never sees
half an output. The work area is removed once the output exists.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from rakuten_mlops import s3
from rakuten_mlops.s3 import S3Url

MANIFEST = "manifest.json"


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def _part_index(name: str) -> int | None:
    if name.startswith("part-") and name.endswith(".parquet"):
        stem = name[len("part-") : -len(".parquet")]
        return int(stem) if stem.isdigit() else None
    return None


def parquet_bytes(table: Any) -> bytes:
    """A table as the bytes of one Parquet file (what a part holds)."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


class WorkArea(Protocol):
    location: str

    def manifest(self) -> dict | None: ...
    def write_manifest(self, manifest: dict) -> None: ...
    def finished(self) -> set[int]: ...
    def put_part(self, index: int, body: bytes) -> None: ...
    def read_part(self, index: int) -> Any: ...
    def remove_all(self) -> None: ...


class LocalWork:
    """Parts in a local folder (``root/key/``); ``owns_root``: the whole root is this output's."""

    def __init__(self, root: Path, key: str, owns_root: bool):
        self.root, self.folder, self.owns_root = root, root / key, owns_root
        self.location = str(self.folder)

    def manifest(self) -> dict | None:
        path = self.folder / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else None

    def write_manifest(self, manifest: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(MANIFEST, json.dumps(manifest, indent=2).encode())

    def finished(self) -> set[int]:
        if not self.folder.is_dir():
            return set()
        return {i for p in self.folder.iterdir() if (i := _part_index(p.name)) is not None}

    def put_part(self, index: int, body: bytes) -> None:
        self._write(part_name(index), body)

    def read_part(self, index: int) -> Any:
        import pyarrow.parquet as pq

        return pq.read_table(self.folder / part_name(index))

    def remove_all(self) -> None:
        shutil.rmtree(self.root if self.owns_root else self.folder, ignore_errors=True)

    def _write(self, name: str, body: bytes) -> None:
        temporary = self.folder / f".{name}.{os.getpid()}.tmp"
        temporary.write_bytes(body)
        os.replace(temporary, self.folder / name)


class S3Work:
    """Parts under an S3 prefix (``root/key/``): each a single PUT, complete or absent."""

    def __init__(self, root: S3Url, key: str, owns_root: bool):
        self.root, self.url, self.owns_root = root, root.child(key), owns_root
        self.location = str(self.url)

    def manifest(self) -> dict | None:
        if self.url.key(MANIFEST) not in s3.list_keys(self.url):
            return None
        return json.loads(s3.get_bytes(self.url, self.url.key(MANIFEST)))

    def write_manifest(self, manifest: dict) -> None:
        s3.put_bytes(self.url, self.url.key(MANIFEST), json.dumps(manifest, indent=2).encode())

    def finished(self) -> set[int]:
        names = (k[len(self.url.prefix) :] for k in s3.list_keys(self.url))
        return {i for name in names if (i := _part_index(name)) is not None}

    def put_part(self, index: int, body: bytes) -> None:
        s3.put_bytes(self.url, self.url.key(part_name(index)), body)

    def read_part(self, index: int) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pq.read_table(pa.BufferReader(s3.get_bytes(self.url, self.url.key(part_name(index)))))

    def remove_all(self) -> None:
        scope = self.root if self.owns_root else self.url
        s3.delete(scope, s3.list_keys(scope))


def work_area(output: str, key: str, work: str | None = None) -> WorkArea:
    """The work area of a run writing ``output``: under ``work`` if given, else beside the output.

    Beside the output the whole ``.NAME.work`` folder is this output's: finishing removes it with
    the parts of older runs (another model version, another input). Under a given ``work`` only
    this run's own folder is removed.
    """
    root = work or _beside(output)
    if root.startswith("s3://"):
        return S3Work(S3Url.parse(root), key, owns_root=work is None)
    return LocalWork(Path(root), key, owns_root=work is None)


def _beside(output: str) -> str:
    if output.startswith("s3://"):
        folder, key = s3.object_url(output)
        return f"{folder}.{key.rpartition('/')[2]}.work"
    path = Path(output)
    return str(path.parent / f".{path.name}.work")


def write_output(parts: Iterator[Any], output_format: str, path: Path) -> int:
    """Write the parts' rows, in order, as one Parquet or CSV file at ``path``; return the rows written."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    writer = None
    rows = 0
    try:
        for table in parts:
            if writer is None:
                writer = (
                    pq.ParquetWriter(path, table.schema)
                    if output_format == "parquet"
                    else pacsv.CSVWriter(path, table.schema)
                )
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


def publish(local: Path, output: str) -> None:
    """Put the finished file at ``output`` in one step: a rename beside it, or one S3 upload."""
    if output.startswith("s3://"):
        folder, key = s3.object_url(output)
        s3.put_file(folder, key, local)
    else:
        os.replace(local, output)


def staging_path(output: str, scratch: Path) -> Path:
    """Where the output is assembled: beside a local output (same filesystem: the rename is atomic)."""
    if output.startswith("s3://"):
        return scratch / "output"
    path = Path(output)
    return path.parent / f".{path.name}.{os.getpid()}.tmp"
