"""Where the repository and the shared checkout beside it (schemas, sample data) are."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SAMPLE_DIR = SHARED / "data" / "rakuten_sample"


def isolated_platform_env(prefix: str, home, database_url: str, tracking_uri: str) -> dict[str, str]:
    """Environment of a platform of its own beside the session's servers: its home, data database,
    and registered model and experiments under names no other test uses."""
    import uuid

    tag = f"{prefix}_{uuid.uuid4().hex[:8]}"
    return {
        "RAKUTEN_HOME": str(home),
        "RAKUTEN_DATABASE_URL": database_url,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "RAKUTEN_REGISTERED_MODEL": tag,
        "RAKUTEN_TRAINING_EXPERIMENT": f"{tag}_training",
        "RAKUTEN_DRIFT_EXPERIMENT": f"{tag}_drift",
        "RAKUTEN_ESTIMATE_EXPERIMENT": f"{tag}_estimate",
    }
