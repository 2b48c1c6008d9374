"""Shadow scoring: a pinned pod also scores a sample of live requests with the alias's newer version.

How a pod learns the candidate: the operator pins the version a pod serves
(``RAKUTEN_MODEL_VERSION``), a promotion moves the alias, and the operator, when it judges the new
version in shadow, tags it with :data:`~rakuten_mlops.registry.SHADOW_TAG` naming the stable
version. A pinned pod with ``RAKUTEN_SHADOW_SAMPLE_RATE > 0`` reads the alias every
``RAKUTEN_SHADOW_POLL_SECONDS``; when it names another version tagged as in shadow beside the
served one, that version is the candidate: loaded beside the served one and fed a sample of live
requests. When the alias names the served version again (reverted), or the tag no longer names it
(promoted, or a readiness-only rollout, which has no analysis to feed), the candidate is dropped.
Alias and tag live in the registry, so an operator restart changes nothing here.

Off the response path: :meth:`ShadowScorer.offer` is called after the served version has
answered and only appends to a bounded queue (full: the sample is dropped and counted); one
background thread scores the queue in batches. The response and its latency belong to the
served version alone. Signals go to Prometheus per version (``rakuten_shadow_*``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

from rakuten_mlops.registry import SHADOW_TAG
from rakuten_mlops.serving.metrics import CUT, multiprocess_dir
from rakuten_mlops.serving.model_store import LoadedModel, ModelStore

log = logging.getLogger("rakuten_mlops.serving.shadow")

MAX_BATCH_ROWS = 64


@dataclass(frozen=True, slots=True)
class Sample:
    designation: str
    description: str
    code: int  # what the served version answered
    confidence: float
    version: str  # the served version that answered


class ShadowScorer:
    """Follows the alias, holds the candidate, scores sampled requests with it in a background thread."""

    def __init__(
        self,
        store: ModelStore,
        metrics,
        sample_rate: float,
        *,
        queue_size: int = 256,
        poll_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.sample_rate = sample_rate
        self.poll_seconds = poll_seconds
        self.candidate: LoadedModel | None = None
        self.queue: queue.Queue[Sample] = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self._random = random.Random()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def for_store(cls, store: ModelStore, metrics) -> ShadowScorer | None:
        """The shadow of a pinned pod with a sample rate; None otherwise (an unpinned pod follows
        the alias itself, so the alias never names a version beside the one it serves)."""
        settings = store.settings
        if not store.pinned_version or settings.shadow_sample_rate <= 0:
            return None
        return cls(
            store,
            metrics,
            settings.shadow_sample_rate,
            queue_size=settings.shadow_queue_size,
            poll_seconds=settings.shadow_poll_seconds,
        )

    # --- the hook on the response path -------------------------------------------------------
    def offer(self, version: str, designations, descriptions, codes, probabilities) -> None:
        """Sample rows the served ``version`` just answered; never blocks, never raises."""
        candidate = self.candidate
        if candidate is None or candidate.version == version:
            return
        rate, draw = self.sample_rate, self._random.random
        for i in range(len(designations)):
            if rate < 1.0 and draw() >= rate:
                continue
            sample = Sample(
                designations[i], descriptions[i], int(codes[i][0]), float(probabilities[i][0]), version
            )
            try:
                self.queue.put_nowait(sample)
            except queue.Full:
                self.dropped += 1
                self.metrics.shadow_samples.labels(candidate.version, "dropped").inc()

    # --- the candidate ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the alias; load the candidate it names while that version is in shadow beside the
        served one, or drop the candidate held when it no longer is."""
        served = self.store.current
        if served is None:
            return
        target = self.store.alias_version()
        current = self.candidate
        if target is None or target == served.version or not self._in_shadow(target, served.version):
            if current is not None:
                log.info("shadow: candidate %s dropped (alias on version %s, not in shadow beside %s)",
                         current.version, target, served.version)  # fmt: skip
                self._set_candidate(None)
            return
        if current is not None and current.version == target:
            return
        model = self.store.load_beside(target)
        log.info(
            "shadow: scoring %.0f%% of requests with candidate version %s", 100 * self.sample_rate, target
        )
        self._set_candidate(model, served)

    def _in_shadow(self, version: str, served: str) -> bool:
        """Whether the operator has ``version`` in shadow beside ``served`` (its SHADOW_TAG)."""
        return self.store.registry().version(version).tags.get(SHADOW_TAG) == served

    def _set_candidate(self, model: LoadedModel | None, served: LoadedModel | None = None) -> None:
        previous, self.candidate = self.candidate, model
        m = self.metrics
        if previous is not None:  # as for rakuten_model_info: 0 is dropped at scrape in multiprocess mode
            if multiprocess_dir():
                m.shadow_candidate.labels(previous.version).set(0)
            else:
                m.shadow_candidate.remove(previous.version)
        if model is None:
            return
        # every series from 0 before the first sample: a scrape then sees each sample as growth
        for result in ("scored", "failed", "dropped"):
            m.shadow_samples.labels(model.version, result)
        m.shadow_agreements.labels(model.version)
        roles = [(model, "candidate")] + ([(served, "stable")] if served is not None else [])
        for loaded, role in roles:
            m.shadow_confidence.labels(loaded.version, role)
            for code in loaded.classes:
                m.shadow_predictions.labels(loaded.version, role, str(int(code)))
        m.shadow_candidate.labels(model.version).set(1)
        self._ensure_worker()

    async def run(self) -> None:
        """Follow the alias every ``poll_seconds`` (registry errors: keep the current candidate)."""
        try:
            while True:
                try:
                    await asyncio.to_thread(self.refresh)
                except Exception as exc:
                    log.warning("shadow: cannot refresh the candidate: %s", str(exc).splitlines()[0][:300])
                await asyncio.sleep(self.poll_seconds)
        finally:
            self._stop.set()

    # --- background scoring ----------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="shadow-scorer", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < MAX_BATCH_ROWS:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            self.score(batch)

    def score(self, batch: list[Sample]) -> None:
        """Score ``batch`` with the candidate and export the comparison with the served answers."""
        candidate = self.candidate
        if candidate is None:
            return
        m, version = self.metrics, candidate.version
        started = time.perf_counter()
        try:
            codes, probabilities, _ = candidate.predict(
                [s.designation for s in batch], [s.description for s in batch], 1
            )
        except Exception as exc:
            m.shadow_samples.labels(version, "failed").inc(len(batch))
            log.warning("shadow: candidate %s failed on %d samples: %s", version, len(batch), exc)
            return
        per_row = (time.perf_counter() - started) / len(batch)
        candidate_codes = [int(row_codes[0]) for row_codes in codes]
        agreements = sum(code == sample.code for code, sample in zip(candidate_codes, batch, strict=True))
        stable_classes = Counter((sample.version, sample.code) for sample in batch)
        candidate_classes = Counter(candidate_codes)
        # One batch is counted whole between two scrapes (CUT): a window's edge never splits it.
        with CUT.held():
            for sample, row_p in zip(batch, probabilities, strict=True):
                m.shadow_confidence.labels(sample.version, "stable").observe(sample.confidence)
                m.shadow_confidence.labels(version, "candidate").observe(float(row_p[0]))
                m.shadow_latency.labels(version).observe(per_row)
            for (stable, code), count in stable_classes.items():
                m.shadow_predictions.labels(stable, "stable", str(code)).inc(count)
            for code, count in candidate_classes.items():
                m.shadow_predictions.labels(version, "candidate", str(code)).inc(count)
            m.shadow_agreements.labels(version).inc(agreements)
            m.shadow_samples.labels(version, "scored").inc(len(batch))
