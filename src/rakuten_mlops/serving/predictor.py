"""Prediction with adaptive micro-batching.

Concurrent requests that arrive while the model is busy are merged into one
``predict_proba`` call (no added delay: a batch is whatever queued up meanwhile). A merged
batch uses one model reference, so every product of a response gets the same version.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from operator import itemgetter

from rakuten_mlops.data.categories import category_name
from rakuten_mlops.model.explain import LinearExplainer, explain, explainer_for
from rakuten_mlops.model.probabilities import LOGGED_TOP_K, encode_many
from rakuten_mlops.serving.errors import ExplanationUnavailable
from rakuten_mlops.serving.model_store import LoadedModel, ModelStore
from rakuten_mlops.serving.prediction_log import PredictionLog, PredictionRecord

MAX_MERGED_ROWS = 2_000


def time_ordered_id() -> str:
    """A fresh UUID version 7 (RFC 9562) in hex: 48 bits of Unix milliseconds, then 74 random bits.

    The prediction ids of a batch are this plus ``-`` and the row number. Starting with the time,
    the ids of the log's rows arrive in nearly increasing order, so Postgres adds each one at the
    right end of the primary key's index (``prediction_id, created_at``), where the pages are in
    memory, instead of at a random leaf; 74 random bits per batch keep the ids from repeating
    across batches, workers and pods.
    """
    random_bits = int.from_bytes(os.urandom(10), "big")
    value = (
        (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76  # version 7
        | (random_bits >> 62 & 0xFFF) << 64
        | 0b10 << 62  # the RFC's variant
        | random_bits & (1 << 62) - 1
    )
    return f"{value:032x}"


class _Names(dict):
    """Category names by code, looked up on first use."""

    def __missing__(self, code: int) -> str:
        name = self[code] = category_name(code)
        return name


@dataclass(slots=True)
class _Job:
    designations: list[str]
    descriptions: list[str]
    productids: list[int | None]
    k: int
    future: asyncio.Future
    explain: int = 0  # features to list per class in an explanation; 0: none asked


class PredictionService:
    """Turns validated products into predictions, metrics and prediction-log records."""

    def __init__(self, store: ModelStore, prediction_log: PredictionLog | None, metrics):
        self.store = store
        self.prediction_log = prediction_log
        self.metrics = metrics
        self._queue: list[_Job] = []
        self._draining = False
        self._names = _Names()
        self._class_counters: dict[int, object] = {}  # labelled children, cached (labels() locks)
        self._explainer: tuple[LoadedModel, LinearExplainer] | None = None  # the last model's
        self.shadow = None  # serving.shadow.ShadowScorer of a pinned pod: gets a sample after each answer

    async def predict(self, products: Sequence, k: int = 3, explain: int = 0) -> tuple[str, list[dict]]:
        """Predictions for ``products`` (objects with designation/description/productid), in order;
        with ``explain`` > 0 each carries an ``explanation`` listing that many features per class."""
        model = self.store.require()  # fail fast with 503 before queueing
        if explain and (self._explainer is None or self._explainer[0] is not model):
            await asyncio.to_thread(self.explainer, model)  # built once, off the event loop; refuses early
        loop = asyncio.get_running_loop()
        job = _Job(
            [p.designation for p in products],
            [p.description or "" for p in products],
            [p.productid for p in products],
            k,
            loop.create_future(),
            explain,
        )
        self._queue.append(job)
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await job.future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # let requests parsed in the same loop turn join this batch
            while self._queue:
                jobs = self._take_batch()
                try:
                    model = self.store.require()
                    results = self._run(model, jobs)
                except Exception as exc:
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(exc)
                else:
                    for job, result in zip(jobs, results, strict=True):
                        if not job.future.done():
                            job.future.set_result((model.version, result))
                await asyncio.sleep(0)
        finally:
            self._draining = False

    def _take_batch(self) -> list[_Job]:
        taken, rows = 0, 0
        for job in self._queue:
            if taken and rows + len(job.designations) > MAX_MERGED_ROWS:
                break
            taken += 1
            rows += len(job.designations)
        jobs, self._queue = self._queue[:taken], self._queue[taken:]
        return jobs

    def _run(self, model: LoadedModel, jobs: list[_Job]) -> list[list[dict]]:
        designations = [d for job in jobs for d in job.designations]
        descriptions = [d for job in jobs for d in job.descriptions]
        k = max(LOGGED_TOP_K, *(job.k for job in jobs))  # the log keeps the top LOGGED_TOP_K
        codes, probabilities, features = model.predict(designations, descriptions, k)
        now = datetime.now(UTC)
        version = model.version
        names = self._names
        batch_id = time_ordered_id()  # prediction ids: one per batch + the row (36 characters)
        pids = [f"{batch_id}-{i:03x}" for i in range(len(codes))]
        results: list[list[dict]] = []
        start = 0
        for job in jobs:
            end, top_k = start + len(job.designations), job.k
            results.append(
                [
                    {
                        "prdtypecode": row_codes[0],
                        "category": names[row_codes[0]],
                        "confidence": row_p[0],
                        "top_k": [
                            {"prdtypecode": code, "category": names[code], "probability": p}
                            for code, p in zip(row_codes[:top_k], row_p[:top_k], strict=True)
                        ],
                        "model_version": version,
                        "prediction_id": pid,
                    }
                    for row_codes, row_p, pid in zip(
                        codes[start:end], probabilities[start:end], pids[start:end], strict=True
                    )
                ]
            )
            start = end
        if any(job.explain for job in jobs):
            self._explain(model, jobs, results)
        self._observe(codes, probabilities, features)
        if self.shadow is not None:
            self.shadow.offer(version, designations, descriptions, codes, probabilities)
        if self.prediction_log is not None:
            self.prediction_log.append(
                self._records(now, version, pids, codes, probabilities, features, jobs)
            )
        return results

    @staticmethod
    def _records(
        now, version, pids, codes, probabilities, features, jobs: list[_Job]
    ) -> list[PredictionRecord]:
        """The prediction-log rows of a batch, built column by column (no Python call per row)."""
        if not pids:
            return []
        lengths, words, empty, oov = zip(*features, strict=True)
        return list(
            map(
                PredictionRecord._make,
                zip(
                    pids,
                    repeat(now),
                    repeat(version),
                    map(itemgetter(0), codes),
                    map(itemgetter(0), probabilities),
                    lengths,
                    words,
                    empty,
                    oov,
                    [productid for job in jobs for productid in job.productids],
                    encode_many(codes, probabilities),
                ),
            )
        )

    def explainer(self, model: LoadedModel) -> LinearExplainer:
        """The explainer of ``model`` (built on first use, kept for the last model asked)."""
        cached = self._explainer
        if cached is not None and cached[0] is model:
            return cached[1]
        try:
            explainer = explainer_for(model.pipeline, model.runner)
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            raise ExplanationUnavailable(
                f"model version {model.version} cannot be explained (not a linear TF-IDF pipeline: {exc})"
            ) from exc
        self._explainer = (model, explainer)
        return explainer

    def _explain(self, model: LoadedModel, jobs: list[_Job], results: list[list[dict]]) -> None:
        """Add ``explanation`` to the predictions of the jobs that asked (one pass over all their
        products); if that fails, those jobs get the error and the others their predictions."""
        asking = [(job, out) for job, out in zip(jobs, results, strict=True) if job.explain]
        try:
            explainer = self.explainer(model)
            matrix = explainer.matrix(
                [d for job, _ in asking for d in job.designations],
                [d for job, _ in asking for d in job.descriptions],
            )
            predicted = [prediction["prdtypecode"] for _, out in asking for prediction in out]
            tops = [job.explain for job, out in asking for _ in out]
            explanations = iter(explain(explainer, matrix, predicted, tops, self._category))
        except Exception as exc:
            for job, _ in asking:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for _, out in asking:
            for prediction in out:
                prediction["explanation"] = next(explanations)

    def _category(self, code: int) -> str:
        return self._names[code]

    def _observe(self, codes: list[list[int]], probabilities: list[list[float]], features) -> None:
        m = self.metrics
        counters = self._class_counters
        for code, count in Counter(row[0] for row in codes).items():
            counter = counters.get(code)
            if counter is None:
                counter = counters[code] = m.predictions.labels(str(code))
            counter.inc(count)
        m.confidence.observe_many([row[0] for row in probabilities])
        m.input_length.observe_many([row[0] for row in features])
