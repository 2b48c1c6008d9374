from __future__ import annotations

from pathlib import Path

import pytest

from rakuten_mlops.data.generator import generate_frame, write_official_layout


@pytest.fixture(scope="session")
def generated_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3,000-row synthetic source in the official layout (shared, read-only)."""
    out = tmp_path_factory.mktemp("source")
    write_official_layout(generate_frame(3000, seed=7), out)
    return out


def write_files(folder: Path, x_text: str, y_text: str, encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "X_train_update.csv").write_bytes(x_text.encode(encoding))
    (folder / "Y_train_CVw08PX.csv").write_bytes(y_text.encode(encoding))
    return folder
