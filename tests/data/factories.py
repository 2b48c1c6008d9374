"""Helpers of the data tests: source folders in the official CSV layout."""

from __future__ import annotations

from pathlib import Path


def write_files(folder: Path, x_text: str, y_text: str, encoding: str = "utf-8") -> Path:
    """``folder`` with the official X and Y files holding exactly these texts."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "X_train_update.csv").write_bytes(x_text.encode(encoding))
    (folder / "Y_train_CVw08PX.csv").write_bytes(y_text.encode(encoding))
    return folder
