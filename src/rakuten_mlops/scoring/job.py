"""Batch scoring of a whole catalogue with one registry version, resumable chunk by chunk.

``score_catalogue`` resolves the version the way the API does (the ``production`` alias, or the
version asked for), reads the catalogue in chunks, scores each chunk with the compiled runner
the API uses, and keeps every finished chunk as a part in the work area (see ``work``). A run
that crashed is started again with the same command: chunks whose part exists are not scored
again. Bad input stops the run with the loader's error, removes the work area and leaves no
output file.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.data.categories import category_name
from rakuten_mlops.errors import DataValidationError
from rakuten_mlops.model.runner import top_k
from rakuten_mlops.scoring import DEFAULT_CHUNK_ROWS, DEFAULT_TOP_K
from rakuten_mlops.scoring.catalogue import format_of, open_catalogue
from rakuten_mlops.scoring.work import (
    WorkArea,
    parquet_bytes,
    publish,
    staging_path,
    work_area,
    write_output,
)
from rakuten_mlops.settings import Settings

WORK_FORMAT = 1  # bump when the parts' columns change: older work areas are then not reused

_FORKED_SCORER: ChunkScorer | None = None  # what the scoring processes inherit when they fork


@dataclass(frozen=True)
class ChunkDone:
    """Progress after one chunk: scored now, or reused from a run that crashed."""

    index: int
    rows: int
    rows_done: int
    read_share: float
    reused: bool
    seconds: float


@dataclass(frozen=True)
class ScoreResult:
    output: str
    rows: int
    chunks: int
    reused_chunks: int
    model_name: str
    model_version: str
    seconds: float

    def describe(self) -> str:
        reused = f" ({self.reused_chunks} reused from an earlier run)" if self.reused_chunks else ""
        rate = self.rows / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"scored {self.rows:,} products in {self.chunks} chunk(s){reused} with {self.model_name} "
            f"version {self.model_version} in {self.seconds:.1f}s ({rate:,.0f} items/s) -> {self.output}"
        )


def load_model(settings: Settings, version: str | None):
    """The registry version to score with, loaded as the API loads it (same runner, same checks)."""
    from rakuten_mlops.serving.model_store import ModelStore

    # a pinned serving version (RAKUTEN_MODEL_VERSION) is the API's business: scoring takes the
    # alias unless --version names one
    store = ModelStore(settings.model_copy(update={"model_version": None}), reload_signal=None)
    store.load(version or None)  # empty (a workflow parameter left blank): the alias
    return store.require()


class ChunkScorer:
    """Turns a chunk of products into the output columns, with one loaded model."""

    def __init__(self, model: Any, top_k: int):
        self.model = model
        self.classes = np.asarray(model.classes, dtype=np.int64)
        self.names = np.asarray([category_name(c) for c in self.classes], dtype=object)
        self.top_k = max(1, min(top_k, len(self.classes)))

    def score(self, frame: pd.DataFrame) -> Any:
        import pyarrow as pa

        proba, _ = self.model.runner.run(frame["designation"].tolist(), frame["description"].tolist())
        top, top_p = top_k(proba, self.top_k)
        columns: dict[str, Any] = {
            "productid": pa.array(frame["productid"].to_numpy(dtype=np.int64)),
            "prdtypecode": pa.array(self.classes[top[:, 0]]),
            "category": pa.array(self.names[top[:, 0]], type=pa.string()),
            "confidence": pa.array(top_p[:, 0]),
        }
        for rank in range(self.top_k):
            columns[f"top{rank + 1}_prdtypecode"] = pa.array(self.classes[top[:, rank]])
            columns[f"top{rank + 1}_probability"] = pa.array(top_p[:, rank])
        columns["model_version"] = pa.array([self.model.version] * len(frame), type=pa.string())
        return pa.table(columns)


def default_workers() -> int:
    """One scoring process per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _score_forked(frame: pd.DataFrame) -> bytes:
    assert _FORKED_SCORER is not None
    return parquet_bytes(_FORKED_SCORER.score(frame))


class _InProcess:
    """The executor of ``workers=1``: score in this process, no fork."""

    def __init__(self, scorer: ChunkScorer):
        self.scorer = scorer

    def submit(self, frame: pd.DataFrame) -> Future:
        future: Future = Future()
        future.set_result(parquet_bytes(self.scorer.score(frame)))
        return future


@contextlib.contextmanager
def _scoring_processes(scorer: ChunkScorer, workers: int) -> Iterator[Any]:
    """Chunks scored by ``workers`` forked processes that share the loaded model (copy-on-write)."""
    global _FORKED_SCORER
    if workers <= 1:
        yield _InProcess(scorer)
        return
    _FORKED_SCORER = scorer
    try:
        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=_die_with_parent
        ) as pool:
            yield _Submitter(pool)
    finally:
        _FORKED_SCORER = None


def _die_with_parent() -> None:
    """A scoring process ends when the job's process dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the line above ran
            os._exit(1)


class _Submitter:
    def __init__(self, pool: ProcessPoolExecutor):
        self.pool = pool

    def submit(self, frame: pd.DataFrame) -> Future:
        return self.pool.submit(_score_forked, frame)


def run_key(digest: str, model_name: str, version: str, chunk_rows: int, top_k: int) -> str:
    """The work area's name: what makes its parts reusable (same input bytes, model, chunks, columns)."""
    text = f"{WORK_FORMAT}:{digest}:{model_name}:{version}:{chunk_rows}:{top_k}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def score_catalogue(
    settings: Settings,
    source: str,
    output: str,
    *,
    version: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    top_k: int = DEFAULT_TOP_K,
    work: str | None = None,
    workers: int | None = None,
    on_chunk: Callable[[ChunkDone], None] | None = None,
) -> ScoreResult:
    """Score the catalogue at ``source`` into ``output`` (Parquet or CSV by its extension)."""
    if chunk_rows < 1:
        raise DataValidationError("--chunk-rows", "must be at least 1")
    output_format = format_of(output)
    started = time.perf_counter()
    model = load_model(settings, version)
    scorer = ChunkScorer(model, top_k)
    with tempfile.TemporaryDirectory(prefix="rakuten-score-") as scratch:
        catalogue = open_catalogue(source, Path(scratch))
        key = run_key(catalogue.digest, model.name, model.version, chunk_rows, scorer.top_k)
        area = work_area(output, key, work)
        _start(area, catalogue, model, chunk_rows, scorer.top_k, source)
        try:
            chunks, reused = _score_chunks(
                catalogue.chunks(chunk_rows), area, scorer, workers or default_workers(), on_chunk
            )
        except DataValidationError:
            area.remove_all()  # the same bytes would fail at the same row: nothing worth keeping
            raise
        if chunks == 0:
            area.remove_all()
            raise DataValidationError(source, "no products to score")
        staged = staging_path(output, Path(scratch))
        try:
            rows = write_output((area.read_part(i) for i in range(chunks)), output_format, staged)
            publish(staged, output)
        finally:
            staged.unlink(missing_ok=True)
        area.remove_all()
    return ScoreResult(output, rows, chunks, reused, model.name, model.version, time.perf_counter() - started)


def _start(area: WorkArea, catalogue, model, chunk_rows: int, top_k: int, source: str) -> None:
    """Write the manifest of a new run, or check that the one found describes this run."""
    manifest = {
        "input": source,
        "input_digest": catalogue.digest,
        "model_name": model.name,
        "model_version": model.version,
        "chunk_rows": chunk_rows,
        "top_k": top_k,
        "work_format": WORK_FORMAT,
    }
    found = area.manifest()
    if found is not None:
        if all(found.get(k) == v for k, v in manifest.items() if k != "input"):
            return  # a run of the same input and model crashed: its parts are reused
        area.remove_all()  # not ours: its parts cannot be trusted
    area.write_manifest({**manifest, "started_at": datetime.now(UTC).isoformat()})


def _score_chunks(
    chunks: Iterator[tuple[pd.DataFrame, float]],
    area: WorkArea,
    scorer: ChunkScorer,
    workers: int,
    on_chunk: Callable[[ChunkDone], None] | None,
) -> tuple[int, int]:
    """Score every chunk whose part is missing; return (chunks, chunks reused).

    Parts are written in chunk order as their scores come back; at most two chunks per worker
    are in flight, so memory holds a few chunks whatever the catalogue's size.
    """
    finished = area.finished()
    in_flight: deque[tuple[int, int, float, float, Future | None]] = deque()
    count = reused = rows_done = 0

    def complete() -> None:
        nonlocal reused, rows_done
        index, rows, read_share, began, future = in_flight.popleft()
        if future is not None:
            area.put_part(index, future.result())
        reused += future is None
        rows_done += rows
        if on_chunk is not None:
            seconds = time.perf_counter() - began
            on_chunk(ChunkDone(index, rows, rows_done, read_share, future is None, seconds))

    with _scoring_processes(scorer, workers) as executor:
        for index, (frame, read_share) in enumerate(chunks):
            job = None if index in finished else executor.submit(frame)
            in_flight.append((index, len(frame), read_share, time.perf_counter(), job))
            count = index + 1
            while len(in_flight) > 2 * workers or (in_flight and _ready(in_flight[0][4])):
                complete()
        while in_flight:
            complete()
    return count, reused


def _ready(future: Future | None) -> bool:
    return future is None or future.done()
