"""The S3 landing zone: drops of official files that ``data upload`` puts and ``data load`` reads.

Layout under ``s3://BUCKET/PREFIX/``: a *drop* is that folder itself or one sub-folder of it,
holding the X and Y files (``X_train_update.csv`` / ``Y_train_CVw08PX.csv``, or the only
``X_*.csv`` / ``Y_*.csv``) and a ``_READY`` marker. ``data upload`` validates the files, removes
the drop's marker, puts the files, and writes the marker last, so a loader never takes a drop whose
upload is still running. The marker holds the drop's digest and row count: the loader checks the
bytes it read against it (a drop replaced while being read is left for the next run) and skips a
drop that is already fully loaded without reading it again.

Each drop is one source for the loader (its own digest, seeded order and slices, as a local
folder): a run loads the next slice of the first drop in name order that is not fully loaded
(the folder itself first, then sub-folders by name); ``--all`` loads every drop to the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rakuten_mlops import s3
from rakuten_mlops.data.loader import LoadPlan, LoadResult, load_source_data, loaded_rows
from rakuten_mlops.data.sources import (
    find_source_files,
    parse_source,
    pick_source_files,
    read_source,
    source_digest,
)
from rakuten_mlops.errors import DataValidationError
from rakuten_mlops.s3 import S3Url
from rakuten_mlops.settings import Settings

READY_MARKER = "_READY"


@dataclass(frozen=True)
class Drop:
    """One folder of the landing zone: its files (names, not keys) and whether it is complete."""

    url: S3Url
    files: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return READY_MARKER in self.files


@dataclass
class LandingLoad:
    """What one ``data load --source s3://...`` run did."""

    url: str
    results: list[LoadResult] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # drops not taken yet, with the reason
    drops: int = 0

    @property
    def batch_ids(self) -> list[int]:
        return [r.batch_id for r in self.results if r.batch_id is not None]

    def summary(self) -> list[str]:
        """What to say after the batches (each described as it commits): nothing loaded, and waits."""
        if not self.drops:
            lines = [
                f"nothing to load yet: no complete drop under {self.url} at {s3.endpoint()} "
                f"(a drop is a folder with the X and Y files and the {READY_MARKER} marker "
                "that `rakuten-mlops data upload` writes last)"
            ]
        elif not self.batch_ids:
            lines = [f"nothing to load: the {self.drops} drop(s) under {self.url} are fully loaded"]
        else:
            lines = []
        return lines + [f"waiting: {w}" for w in self.waiting]


@dataclass(frozen=True)
class UploadResult:
    url: str
    files: tuple[str, ...]
    rows: int
    digest: str
    seconds: float

    def describe(self) -> str:
        return (
            f"uploaded {self.rows:,} products ({', '.join(self.files)}) to {self.url} in {self.seconds:.2f}s; "
            f"drop complete ({READY_MARKER} written last)"
        )


def find_drops(url: S3Url) -> list[Drop]:
    """The drops under ``url`` in loading order: the folder itself, then its sub-folders by name."""
    folders: dict[str, list[str]] = {}
    for key in s3.list_keys(url):
        parts = key[len(url.prefix) :].split("/")
        if len(parts) == 1:
            folders.setdefault("", []).append(parts[0])
        elif len(parts) == 2 and parts[1]:
            folders.setdefault(parts[0], []).append(parts[1])
    return [
        Drop(url.child(name) if name else url, tuple(sorted(files)))
        for name, files in sorted(folders.items())
    ]


def load_from_landing(
    settings: Settings,
    url: str,
    plan: LoadPlan,
    on_loaded: Callable[[LoadResult], None] | None = None,
) -> LandingLoad:
    """Load the next slice of the first unfinished drop (every drop to the end with ``--all``)."""
    zone = S3Url.parse(url)
    outcome = LandingLoad(str(zone))
    for drop in find_drops(zone):
        if not drop.ready:
            if any(name.endswith(".csv") for name in drop.files):
                outcome.waiting.append(f"{drop.url} has no {READY_MARKER} marker yet (upload in progress?)")
            continue
        outcome.drops += 1
        if outcome.batch_ids and not plan.load_all:
            continue
        marker = _read_marker(drop)
        if _fully_loaded(settings, marker):
            continue  # no need to read it again
        started = time.perf_counter()
        x_url, x_raw, y_url, y_raw = _read_drop(drop)
        if marker.get("digest") and marker["digest"] != source_digest(x_raw, y_raw):
            outcome.waiting.append(
                f"{drop.url} changed while it was read (being replaced?); the next run takes it"
            )
            break
        data = parse_source(x_url, x_raw, y_url, y_raw)
        result = load_source_data(settings, data, str(drop.url), plan, started)
        if result.batch_id is None:
            continue
        outcome.results.append(result)
        if on_loaded is not None:
            on_loaded(result)
    return outcome


def _fully_loaded(settings: Settings, marker: dict) -> bool:
    """True when the marker names a digest and row count and that many rows are loaded."""
    if not marker.get("digest") or not isinstance(marker.get("rows"), int):
        return False
    return loaded_rows(settings, str(marker["digest"])) >= marker["rows"]


def _read_marker(drop: Drop) -> dict:
    """The marker's JSON (``{}`` for an empty marker written by hand)."""
    raw = s3.get_bytes(drop.url, drop.url.key(READY_MARKER))
    if not raw.strip():
        return {}
    try:
        marker = json.loads(raw)
    except ValueError:
        marker = None
    if not isinstance(marker, dict):
        raise DataValidationError(
            drop.url.object_url(drop.url.key(READY_MARKER)),
            "the marker is not a JSON object; re-upload the drop with `rakuten-mlops data upload`",
        )
    return marker


def _read_drop(drop: Drop) -> tuple[str, bytes, str, bytes]:
    """The s3:// URL and bytes of a drop's X and Y files (read in memory: no local copy)."""
    x_name, y_name = pick_source_files(str(drop.url), drop.files)
    x_url, y_url = (drop.url.object_url(drop.url.key(n)) for n in (x_name, y_name))
    x_raw = s3.get_bytes(drop.url, drop.url.key(x_name))
    y_raw = s3.get_bytes(drop.url, drop.url.key(y_name))
    return x_url, x_raw, y_url, y_raw


def upload_drop(folder: Path, url: str) -> UploadResult:
    """Validate ``folder`` and put it at ``url`` as one drop; the marker goes last."""
    started = time.perf_counter()
    folder = Path(folder)
    x_path, y_path = find_source_files(folder)
    data = read_source(folder)
    target = S3Url.parse(url)
    ours = (x_path.name, y_path.name)
    existing = [k for k in s3.list_keys(target) if "/" not in k[len(target.prefix) :]]
    stale = [
        k
        for k in existing
        if k[len(target.prefix) :] not in ours
        and (k.endswith(".csv") and k[len(target.prefix) :][:2] in ("X_", "Y_"))
    ]
    # the marker first: from here until the new marker exists, loaders leave this drop alone
    s3.delete(target, [target.key(READY_MARKER)] if target.key(READY_MARKER) in existing else [])
    s3.delete(target, stale)
    for path in (x_path, y_path):
        s3.put_file(target, target.key(path.name), path)
    marker = {
        "digest": data.digest,
        "rows": len(data.frame),
        "files": list(ours),
        "uploaded_at": datetime.now(UTC).isoformat(),
    }
    s3.put_bytes(target, target.key(READY_MARKER), json.dumps(marker).encode())
    return UploadResult(str(target), ours, len(data.frame), data.digest, time.perf_counter() - started)
