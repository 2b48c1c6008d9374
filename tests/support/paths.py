"""Where the repository and the shared checkout beside it (schemas, sample data) are."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SAMPLE_DIR = SHARED / "data" / "rakuten_sample"
