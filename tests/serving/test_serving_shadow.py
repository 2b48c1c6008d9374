"""The shadow scorer in process: sampling, the bounded queue, and the per-version signals it exports.

The end-to-end path (a pinned API process following the alias, Prometheus scraping it) is
tested in tests/operator/test_delivery_signals.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from prometheus_client import REGISTRY

from rakuten_mlops.model.runner import plan_for
from rakuten_mlops.serving.metrics import CUT, api_metrics, build_registry, render
from rakuten_mlops.serving.model_store import LoadedModel
from rakuten_mlops.serving.shadow import ShadowScorer
from tests.serving.factories import REALISTIC_PRODUCTS


def loaded(pipeline, version: str) -> LoadedModel:
    return LoadedModel(
        name="m", version=version, alias=None, run_id=None, scores={}, tags={}, loaded_at=datetime.now(UTC),
        pipeline=pipeline, classes=np.asarray(pipeline.classes_).astype(np.int64), runner=plan_for(pipeline),
    )  # fmt: skip


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def versions(fitted_pipelines):
    tag = uuid.uuid4().hex[:6]  # the metrics are process-wide: unique versions per test
    return loaded(fitted_pipelines[0], f"s{tag}"), loaded(fitted_pipelines[0], f"c{tag}")


def answers(model: LoadedModel, products):
    designations = [p["designation"] for p in products]
    descriptions = [p.get("description", "") for p in products]
    codes, probabilities, _ = model.predict(designations, descriptions, 1)
    return designations, descriptions, codes, probabilities


def test_sampled_rows_are_scored_and_compared_per_version(versions):
    served, candidate = versions
    shadow = ShadowScorer(None, api_metrics(), 1.0, queue_size=100)
    shadow._stop.set()  # no worker thread: this test drains the queue itself
    shadow._set_candidate(candidate, served)
    assert value("rakuten_shadow_candidate_info", model_version=candidate.version) == 1
    shadow.offer(served.version, *answers(served, REALISTIC_PRODUCTS))
    batch = [shadow.queue.get_nowait() for _ in range(shadow.queue.qsize())]
    assert len(batch) == len(REALISTIC_PRODUCTS)
    shadow.score(batch)
    n = len(REALISTIC_PRODUCTS)
    assert value("rakuten_shadow_samples_total", model_version=candidate.version, result="scored") == n
    assert value("rakuten_shadow_agreements_total", model_version=candidate.version) == n, (
        "same fit: all agree"
    )
    stable_total = sum(
        value(
            "rakuten_shadow_predictions_total",
            model_version=served.version,
            role="stable",
            prdtypecode=str(c),
        )
        for c in served.classes
    )
    assert stable_total == n
    assert value("rakuten_shadow_confidence_count", model_version=candidate.version, role="candidate") == n
    assert value("rakuten_shadow_duration_seconds_count", model_version=candidate.version) == n


def test_a_full_queue_drops_and_counts_never_blocks(versions):
    served, candidate = versions
    shadow = ShadowScorer(None, api_metrics(), 1.0, queue_size=2)
    shadow._stop.set()
    shadow._set_candidate(candidate, served)
    shadow.offer(served.version, *answers(served, REALISTIC_PRODUCTS[:5]))
    assert shadow.queue.qsize() == 2 and shadow.dropped == 3
    assert value("rakuten_shadow_samples_total", model_version=candidate.version, result="dropped") == 3


def test_sampling_rate_and_no_candidate(versions):
    served, candidate = versions
    shadow = ShadowScorer(None, api_metrics(), 0.3, queue_size=10_000)
    shadow._stop.set()
    rows = answers(served, REALISTIC_PRODUCTS)
    shadow.offer(served.version, *rows)
    assert shadow.queue.qsize() == 0, "no candidate: nothing sampled"
    shadow._set_candidate(candidate, served)
    shadow.offer(candidate.version, *rows)
    assert shadow.queue.qsize() == 0, "the candidate is the served version: nothing to compare"
    for _ in range(300):
        shadow.offer(served.version, *rows)
    assert 0.25 < shadow.queue.qsize() / (300 * len(REALISTIC_PRODUCTS)) < 0.35


SCRAPES = 300  # the old scorer split about 1 scrape in 30 at this switch interval


def test_no_scrape_shows_part_of_a_scored_batch(versions):
    """A scrape reads each counter in turn while the scorer thread counts its batches: a scrape
    between a batch's agreements and its samples would show agreements the samples do not cover.
    Thread switches are forced every 10 µs so that such an interleaving happens within seconds."""
    served, candidate = versions  # the same fit: every sample agrees
    shadow = ShadowScorer(None, api_metrics(), 1.0, queue_size=10_000)
    shadow._stop.set()
    shadow._set_candidate(candidate, served)
    rows = answers(served, REALISTIC_PRODUCTS)
    scored = re.compile(
        rf'rakuten_shadow_samples_total\{{model_version="{candidate.version}",result="scored"\}} (\S+)'
    )
    agreed = re.compile(rf'rakuten_shadow_agreements_total\{{model_version="{candidate.version}"\}} (\S+)')
    stop = threading.Event()

    def score_batches() -> None:
        while not stop.is_set():
            shadow.offer(served.version, *rows)
            shadow.score([shadow.queue.get_nowait() for _ in range(shadow.queue.qsize())])

    registry, split, scrapes = build_registry(None), [], 0
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    worker = threading.Thread(target=score_batches, daemon=True)
    worker.start()
    try:
        # a number of scrapes, not a duration: under load 3 s may hold fewer than a hundred
        deadline = time.monotonic() + 120
        while scrapes < SCRAPES and time.monotonic() < deadline:
            text = render(registry)[0].decode()
            counts = float(scored.search(text).group(1)), float(agreed.search(text).group(1))
            scrapes += 1
            if counts[0] != counts[1]:
                split.append(counts)
    finally:
        stop.set()
        worker.join(10)
        sys.setswitchinterval(interval)
    counted = value("rakuten_shadow_samples_total", model_version=candidate.version, result="scored")
    assert scrapes >= SCRAPES and counted > 0
    assert not split, f"{len(split)} of {scrapes} scrapes split a batch (scored, agreements): {split[:5]}"


def test_across_workers_the_cut_is_a_lock_on_a_file_of_their_directory(tmp_path, monkeypatch):
    """In multiprocess mode another worker's scrape (another process) waits while a batch is counted."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    take = "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a'), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    lock_file = str(tmp_path / CUT.FILE)
    with CUT.held():
        held = subprocess.run([sys.executable, "-c", take, lock_file], capture_output=True, text=True)
    released = subprocess.run([sys.executable, "-c", take, lock_file], capture_output=True, text=True)
    assert held.returncode != 0 and "BlockingIOError" in held.stderr
    assert released.returncode == 0, released.stderr
    assert not list(tmp_path.glob("*.db")), "prometheus-client reads *.db files only: the lock is not one"
