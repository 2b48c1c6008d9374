"""Jobs killed at every step: ``data load``, ``train --promote``, ``drift``, ``estimate`` and
``score`` each run as a real ``rakuten-mlops`` subprocess on a throwaway Postgres data database and
the session's MLflow server, and are SIGKILLed at seeded random points spread over the length of
an unkilled run (one point in each of N equal slices, after the process's first output line, so
no point is spent on interpreter start-up).

After every kill, ``rakuten_mlops.doctor.check`` (the ``rakuten-mlops doctor`` command) must find
no violation: no half batch, no production alias without its ``model_events`` rows, no report
(database rows, files, MLflow runs) that is partial yet looks complete; the job's own output must
be absent or complete. The next kill starts from what the last one left; after every fifth kill
and after the last, the same command is run again to its end and must reach the same end state
as the unkilled run (the trained model's score, the drift tests, the estimate, the scored file;
for ``data load``, exactly one batch more than the kills left, the batches as many never-killed
loads make), and the check must still pass. At least a third of the points must land (find the
job still running): a run whose kills all came after the job finished tested nothing.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.chaos.conftest import chaos_scale
from tests.support import MlflowServer, temporary_database
from tests.support.paths import isolated_platform_env
from tests.support.processes import CLI, ManagedProcess

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.slow]

KILLS = 20  # per job at RAKUTEN_CHAOS_SCALE=1
BASE_ROWS = 1500  # loaded before the scenarios: what the model is trained on
LOAD_SOURCE_ROWS = 2000  # the load job's own source, 40 rows a batch
CATALOGUE_ROWS = 3000  # what the score job scores, 300 rows a chunk
PREDICTIONS = 600  # prediction-log rows drift and estimate read
RERUN_EVERY = 5  # a rerun after every 5th kill and after the last; the kills between start from leftovers


def kill_count() -> int:
    return max(3, round(KILLS * chaos_scale()))


@dataclass
class Platform:
    settings: object  # rakuten_mlops.settings.Settings
    env: dict[str, str]
    root: Path
    load_source: Path
    catalogue: Path
    admin_url: str


@pytest.fixture(scope="module")
def platform(pg_server: str, mlflow_server: MlflowServer, tmp_path_factory) -> Iterator[Platform]:
    """Base data loaded, a model trained and promoted, a prediction log; settings of their own
    (registered model and experiment names) on the session MLflow server."""
    from rakuten_mlops.data.generator import generate_frame, write_official_layout
    from rakuten_mlops.data.loader import LoadPlan, load_next_batch
    from rakuten_mlops.monitoring.reference import load_production_model
    from rakuten_mlops.settings import Settings
    from rakuten_mlops.training.train import run_training
    from tests.monitoring.test_monitoring_estimate import log_window

    root = tmp_path_factory.mktemp("job-kills")
    with temporary_database(pg_server, "rk_kills") as url:
        env = {
            **isolated_platform_env("kills", root / "home", url, mlflow_server.uri),
            # every finished training promotes: the alias moves in every train run
            "RAKUTEN_MIN_F1": "0",
            "RAKUTEN_MIN_GAIN": "-1",
            "RAKUTEN_MAX_ECE": "1",
            "PYTHONUNBUFFERED": "1",  # output lines appear as the job reaches them
        }
        settings = Settings(
            home=root / "home", database_url=url, MLFLOW_TRACKING_URI=mlflow_server.uri,
            registered_model=env["RAKUTEN_REGISTERED_MODEL"], training_experiment=env["RAKUTEN_TRAINING_EXPERIMENT"],
            drift_experiment=env["RAKUTEN_DRIFT_EXPERIMENT"], estimate_experiment=env["RAKUTEN_ESTIMATE_EXPERIMENT"],
            min_f1=0.0, min_gain=-1.0, max_ece=1.0,
        )  # fmt: skip
        base = root / "base"
        write_official_layout(generate_frame(BASE_ROWS, seed=3), base)
        load_next_batch(settings, base, LoadPlan(load_all=True))
        result = run_training(settings, promote=True, actor="tests")
        assert result.decision_label == "promoted", result.describe()
        model = load_production_model(settings)
        window = SimpleNamespace(settings=settings, pipeline=model.pipeline, version=model.version)
        log_window(window, generate_frame(PREDICTIONS, seed=5, first_productid=7_000_000_000), labelled=False)
        load_source = root / "load-source"
        write_official_layout(
            generate_frame(LOAD_SOURCE_ROWS, seed=9, first_productid=8_000_000_000), load_source
        )
        catalogue, _ = write_official_layout(generate_frame(CATALOGUE_ROWS, seed=11), root / "catalogue")
        yield Platform(settings, env, root, load_source, catalogue, pg_server)


# --- the jobs -------------------------------------------------------------------------------


@dataclass
class Job:
    """One command, what must hold of its own output after a kill, and the end state a run reaches."""

    name: str
    args: list[str]
    before_run: Callable[[], None] = lambda: None
    output_after_kill: Callable[[], list[str]] = lambda: []  # problems with a killed run's output
    end_state: Callable[[], object] = lambda: None  # compared between the unkilled run and each rerun
    problems: list[str] = field(default_factory=list)


def _load_job(p: Platform) -> Job:
    def end_state():
        return _batches(p, p.load_source)

    return Job(
        "load",
        ["data", "load", "--source", str(p.load_source), "--initial-fraction", "0.02", "--batch-rows", "40"],
        end_state=end_state,
    )


def _batches(p: Platform, source: Path) -> list[tuple]:
    """(row_start, row_end, row_count, checksum) of the succeeded batches of ``source``."""
    from sqlalchemy import select

    from rakuten_mlops.data.sources import read_source
    from rakuten_mlops.db import engine_for
    from rakuten_mlops.db.models import LoadBatch as B

    digest = read_source(source).digest
    with engine_for(p.settings.database_url).connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(B.row_start, B.row_end, B.row_count, B.checksum)
                .where(B.source_digest == digest, B.status == "succeeded")
                .order_by(B.row_start)
            ).all()
        ]


def _train_job(p: Platform) -> Job:
    output = p.root / "train-decision.json"

    def end_state():
        from rakuten_mlops.registry import ModelRegistry

        decision = json.loads(output.read_text())
        production = ModelRegistry(p.settings).production()
        assert production is not None and production.version == decision["version"], decision
        return decision["decision"], round(decision["f1_weighted"], 6), production.tags["f1_weighted"]

    return Job(
        "train",
        ["train", "--promote", "--output", str(output)],
        before_run=lambda: output.unlink(missing_ok=True),
        output_after_kill=lambda: _json_whole_or_absent(output),
        end_state=end_state,
    )


def _json_whole_or_absent(path: Path) -> list[str]:
    if not path.exists():
        return []
    try:
        json.loads(path.read_text())
    except ValueError:
        return [f"{path} holds half a JSON document"]
    return []


def _drift_job(p: Platform) -> Job:
    output = p.root / "drift.json"

    def end_state():
        summary = json.loads(output.read_text())
        return (
            summary["severity"],
            summary["n_current"],
            [(t["feature"], t["test"], round(t["score"], 9)) for t in summary["tests"]],
        )

    return Job(
        "drift",
        ["drift", "--window", "1d", "--output", str(output)],
        before_run=lambda: output.unlink(missing_ok=True),
        output_after_kill=lambda: _json_whole_or_absent(output),
        end_state=end_state,
    )


def _estimate_job(p: Platform) -> Job:
    output = p.root / "estimate.json"

    def end_state():
        summary = json.loads(output.read_text())
        return summary["n"], summary["f1_weighted"], summary["interval"], summary["trusted"]

    return Job(
        "estimate",
        ["estimate", "--window", "1d", "--windows", "3", "--output", str(output)],
        before_run=lambda: output.unlink(missing_ok=True),
        output_after_kill=lambda: _json_whole_or_absent(output),
        end_state=end_state,
    )


def _score_job(p: Platform) -> Job:
    output = p.root / "scored" / "predictions.parquet"

    def end_state():
        frame = pd.read_parquet(output)
        return len(frame), pd.util.hash_pandas_object(frame, index=False).sum()

    def after_kill() -> list[str]:
        if not output.exists():
            return []
        try:
            rows = len(pd.read_parquet(output))
        except Exception as exc:
            return [f"{output} is unreadable after the kill: {exc}"]
        return [] if rows == CATALOGUE_ROWS else [f"{output} holds {rows} of {CATALOGUE_ROWS} rows"]

    return Job(
        "score",
        [
            "score",
            "--input",
            str(p.catalogue),
            "--output",
            str(output),
            "--chunk-rows",
            "300",
            "--workers",
            "2",
        ],
        before_run=lambda: output.unlink(missing_ok=True),
        output_after_kill=after_kill,
        end_state=end_state,
    )


JOBS = {
    "load": _load_job,
    "train": _train_job,
    "drift": _drift_job,
    "estimate": _estimate_job,
    "score": _score_job,
}


# --- running and killing --------------------------------------------------------------------


def _start(p: Platform, job: Job, label: str) -> ManagedProcess:
    job.before_run()
    log = p.root / "logs" / f"{job.name}-{label}.log"
    return ManagedProcess(f"rakuten-mlops {job.name} ({label})", [*CLI, *job.args], log, env=p.env).start()


def _run_to_end(
    p: Platform, job: Job, label: str, timeout: float = 300
) -> tuple[ManagedProcess, float, float]:
    """Run the job unkilled; (process, seconds to its first output line, seconds to its end)."""
    started = time.monotonic()
    process = _start(p, job, label)
    first = None
    while process.poll() is None:
        if first is None and process.log_size() > 0:
            first = time.monotonic() - started
        assert time.monotonic() - started < timeout, (
            f"{job.name} ({label}) did not finish\n{process.log_tail()}"
        )
        time.sleep(0.01)
    process.stop()
    total = time.monotonic() - started
    assert process.returncode == 0, f"{job.name} ({label}) exited {process.returncode}\n{process.log_tail()}"
    return process, first if first is not None else 0.0, total


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _phase(process: ManagedProcess) -> str:
    """The job's last output line when it was killed, numbers and paths left out: where it was."""
    lines = [line.strip() for line in re.split(r"[\r\n]", process.output()) if line.strip()]
    if not lines:
        return "(no output yet)"
    return re.sub(r"\d[\d.,]*", "N", lines[-1].split(":")[0])[:40]


def _violations(p: Platform) -> list[str]:
    from rakuten_mlops.doctor import check

    return [f"[{f.area}] {f.what}" for f in check(p.settings).violations]


@pytest.mark.long
@pytest.mark.parametrize("name", list(JOBS))
def test_job_killed_at_random_points(name: str, platform: Platform, chaos_figures) -> None:
    job = JOBS[name](platform)
    points = kill_count()
    began = time.monotonic()
    _reference, first_line, duration = _run_to_end(platform, job, "unkilled")
    expected = job.end_state()
    assert not _violations(platform), _violations(platform)

    unkilled_batches = _unkilled_batches(platform, 2 * points + 1) if name == "load" else []
    rng = random.Random(f"job-kills-{name}")
    violations: list[str] = []
    landed, reruns, reruns_ok, orphans, phases = 0, 0, 0, 0, []
    for i in range(points):
        delay = first_line + (i + rng.random()) / points * (duration - first_line)
        started = time.monotonic()
        process = _start(platform, job, f"kill-{i}")
        time.sleep(delay)
        if process.poll() is not None:  # it ran faster than the unkilled run: aim the next points earlier
            duration = max(first_line + 0.5, min(duration, time.monotonic() - started))
        else:
            landed += 1
            os.kill(process.pid, signal.SIGKILL)  # the job's main process only, as a lost pod's would
            process.proc.wait(10)
            phases.append(_phase(process))
            # its helpers (scoring workers) must die with it
            deadline = time.monotonic() + 10
            while _group_alive(process.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            orphans += _group_alive(process.pid)
        process.stop()
        found = job.output_after_kill() + _violations(platform)
        violations += [
            f"after kill {i} at {delay:.2f}s ({phases[-1] if phases else '-'}): {v}" for v in found
        ]

        if (i + 1) % RERUN_EVERY and i + 1 < points:
            continue  # the next kill starts from what this one left behind
        reruns += 1
        # a finished load adds exactly one batch to what the kills left (each added one or none):
        # the rerun must end with one batch more, as many as never-killed loads make
        want = unkilled_batches[: len(job.end_state()) + 1] if name == "load" else expected
        _run_to_end(platform, job, f"rerun-{i}")
        state = job.end_state()
        same = state == want
        reruns_ok += same
        if not same:
            violations.append(f"rerun {i} ended in {state!r}, expected {want!r}")
        violations += [f"after rerun {i}: {v}" for v in _violations(platform)]

    seconds = time.monotonic() - began
    # a point misses when the job finished before it: a run started from a killed run's leftovers
    # can be much faster (score reuses finished chunks), so a third, not all
    least = math.ceil(points / 3)
    chaos_figures.record(f"{name}: kills landed (of points)", f"{landed} of {points}",
                         goal=f">= {least}", met=landed >= least)  # fmt: skip
    chaos_figures.record(f"{name}: unkilled run (s)", duration)
    per_phase = Counter(phases)
    chaos_figures.record(
        f"{name}: kills per phase (last output line)",
        "; ".join(f"{k} x{n}" for k, n in per_phase.most_common()),
    )
    chaos_figures.record(f"{name}: invariant violations", len(violations), goal="0", met=not violations)
    chaos_figures.record(f"{name}: reruns completing with the unkilled end state", f"{reruns_ok} of {reruns}",
                         goal="all", met=reruns_ok == reruns)  # fmt: skip
    chaos_figures.record(f"{name}: processes surviving their job's kill", orphans, goal="0", met=orphans == 0)
    chaos_figures.record(f"{name}: scenario time (s)", seconds)
    print(f"\n{name}: {landed} of {points} kills landed, {len(violations)} violations, "
          f"{reruns_ok} of {reruns} reruns reached the unkilled end state, {orphans} orphans, {seconds:.0f}s; "
          f"kills per phase: {dict(per_phase)}")  # fmt: skip
    assert not violations, "\n".join(violations)
    assert reruns_ok == reruns and orphans == 0
    assert landed >= least, (
        f"{landed} of {points} kills found {name} still running (at least {least} must): "
        "the others hit nothing, so the scenario tested too little"
    )


def _unkilled_batches(p: Platform, count: int) -> list[tuple]:
    """The batches ``count`` never-killed loads of the load source make, on a database of their own."""
    from rakuten_mlops.data.loader import LoadPlan, load_next_batch
    from rakuten_mlops.settings import Settings

    with temporary_database(p.admin_url, "rk_kills_ref") as url:
        settings = Settings(
            home=p.root / "reference-home", database_url=url, MLFLOW_TRACKING_URI="sqlite:///:memory:"
        )
        for _ in range(count):
            load_next_batch(settings, p.load_source, LoadPlan(initial_fraction=0.02, batch_rows=40))
        return _batches(SimpleNamespace(settings=settings), p.load_source)
