"""Drift check over 100k logged predictions (target <= 20 s on 2 cores), against two peers: the
same check over 10k predictions, and Evidently's full ``DataDriftPreset`` on the same frames.

Setup (not timed): a trained and promoted sgd model on 18k generated rows, 100k prediction-log
rows as the API writes them (Postgres when one answers, else SQLite). Timed: ``run_drift_check``
in a warm process (model load from MLflow, reference features, prediction-log read, Evidently
report + HTML, MLflow run, ``drift_reports`` row), and the cold ``rakuten-mlops drift`` command.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from benchmarks.common import best_of, print_table, throwaway_postgres

CURRENT_ROWS = 100_000
PEER_ROWS = 10_000
TARGET_SECONDS = 20.0


def _insert_predictions(database_url: str, outputs: pd.DataFrame, version: str, created_at: datetime) -> None:
    from sqlalchemy import insert

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction

    upgrade(database_url)
    rows = [
        {
            "prediction_id": str(uuid.uuid4()), "created_at": created_at, "model_version": version,
            "prdtypecode": int(r.prdtypecode), "confidence": float(r.confidence), "text_length": int(r.text_length),
            "word_count": int(r.word_count), "description_empty": bool(r.description_empty),
            "oov_rate": float(r.oov_rate), "productid": None,
        }
        for r in outputs.itertuples()
    ]  # fmt: skip
    with engine_for(database_url).begin() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(insert(Prediction.__table__), rows[start : start + 10_000])


def _setup(home: Path, database_url: str):
    from rakuten_mlops.data.generator import generate_frame, write_official_layout
    from rakuten_mlops.data.loader import LoadPlan, load_next_batch
    from rakuten_mlops.monitoring.reference import load_production_model, model_outputs
    from rakuten_mlops.settings import Settings
    from rakuten_mlops.training.train import run_training

    settings = Settings(
        home=home, database_url=database_url, MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}"
    )
    write_official_layout(generate_frame(30_000, seed=1), home / "source")
    load_next_batch(settings, home / "source", LoadPlan(initial_fraction=0.6))
    run_training(settings, model="sgd", promote=True, actor="bench")
    model = load_production_model(settings)
    outputs = model_outputs(model.pipeline, generate_frame(20_000, seed=5))
    now = datetime.now(UTC)
    big = pd.concat([outputs] * (CURRENT_ROWS // len(outputs)), ignore_index=True)
    _insert_predictions(database_url, big, model.version, now - timedelta(minutes=30))
    # the peer window: 10k rows a month ago, read with --window 1d at that time
    _insert_predictions(database_url, outputs.iloc[:PEER_ROWS], model.version, now - timedelta(days=30))
    return settings, model, now


def _evidently_preset_seconds(reference: pd.DataFrame, current: pd.DataFrame) -> float:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from rakuten_mlops.monitoring.stattests import CATEGORICAL, NUMERICAL

    definition = DataDefinition(numerical_columns=NUMERICAL, categorical_columns=CATEGORICAL)

    def run() -> None:
        snapshot = Report([DataDriftPreset()]).run(
            current_data=Dataset.from_pandas(current[NUMERICAL + CATEGORICAL], data_definition=definition),
            reference_data=Dataset.from_pandas(
                reference[NUMERICAL + CATEGORICAL], data_definition=definition
            ),
        )
        snapshot.save_html(os.devnull)

    return best_of(run, repeat=2)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, throwaway_postgres() as pg_url:
        home = Path(tmp) / "home"
        database_url = pg_url or f"sqlite:///{home / 'data.db'}"
        print(
            f"setup: training a model and logging {CURRENT_ROWS:,} predictions ({database_url.split(':')[0]}) ..."
        )
        settings, model, now = _setup(home, database_url)

        start = time.perf_counter()
        import evidently  # noqa: F401 - first import, reported apart from the check

        import_seconds = time.perf_counter() - start

        from rakuten_mlops.monitoring.drift import current_frame, run_drift_check
        from rakuten_mlops.monitoring.reference import reference_frame

        summaries = []
        cpu_start = time.process_time()
        ours = best_of(lambda: summaries.append(run_drift_check(settings, "1d", now=now).summary), repeat=2)
        ours_cpu = (time.process_time() - cpu_start) / 2
        peer_now = now - timedelta(days=30) + timedelta(hours=1)
        small = best_of(lambda: run_drift_check(settings, "1d", now=peer_now), repeat=2)
        reference = reference_frame(settings, model)
        current = current_frame(settings, now - timedelta(days=1), now, model.version)
        preset = _evidently_preset_seconds(reference, current)

        env = {**os.environ, "RAKUTEN_HOME": str(home), "RAKUTEN_DATABASE_URL": database_url,
               "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}  # fmt: skip
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "rakuten_mlops.cli", "drift", "--window", "1d", "--json"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        cold = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cold_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)

        n = summaries[-1]["n_current"]
        print_table(
            ["what", "predictions", "wall s", "CPU s", "ratio"],
            [
                ["drift check, warm process (ours)", f"{n:,}", ours, ours_cpu, "1.00x"],
                ["same check on 10k predictions (peer)", f"{PEER_ROWS:,}", small, "", f"ours {ours / small:.2f}x"],
                ["Evidently DataDriftPreset + HTML (peer)", f"{n:,}", preset, "", f"ours {ours / preset:.2f}x"],
                ["`rakuten-mlops drift` cold, incl. imports", f"{n:,}", cold, cold_cpu, f"{cold / ours:.2f}x warm"],
            ],
        )  # fmt: skip
        print(
            f"machine load average while measuring: {os.getloadavg()[0]:.1f} (2 cores; wall times include waiting)"
        )
        print(f"(first `import evidently` in this process: {import_seconds:.1f}s, not in the warm time)")
        print(f"severity of the 100k window (same distribution): {summaries[-1]['severity']}")
        verdict = "met" if ours <= TARGET_SECONDS else "NOT met"
        print(
            f"target: drift check over {CURRENT_ROWS:,} predictions <= {TARGET_SECONDS:.0f}s: {verdict} ({ours:.1f}s)"
        )


if __name__ == "__main__":
    main()
