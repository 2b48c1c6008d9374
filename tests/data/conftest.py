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
