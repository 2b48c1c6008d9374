"""What ``?explain=true`` costs, and that the default path did not get slower.

In-process, through the prediction fast path (``PredictionEndpoints``: query and body parsing,
``PredictionService``, JSON response; no sockets): the default pipeline trained on
BENCH_EXPLAIN_ROWS generated rows (default 20,000), held-out generated products sent one per
request and in batches of 1,000. Sides, alternating in every round (BENCH_EXPLAIN_ROUNDS,
default 15), medians per item; a ratio is the median of the rounds' ratios (both sides measured
back to back, the machine is shared):

- ``default``: ``POST /predict`` (``/predict/batch``) without a query string;
- ``explain``: the same with ``?explain=true`` (5 n-grams per class);
- ``default @ REV`` when BENCH_EXPLAIN_BEFORE names a git revision (e.g. ``main``): the default
  path of that revision's ``fastpath.py`` and ``predictor.py``, loaded beside the current ones
  on the same model, so the ratio is "now / before" on the same machine at the same moment.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import orjson

from benchmarks.common import print_table

TRAIN_ROWS = int(os.environ.get("BENCH_EXPLAIN_ROWS", "20000"))
ROUNDS = int(os.environ.get("BENCH_EXPLAIN_ROUNDS", "15"))
BEFORE = os.environ.get("BENCH_EXPLAIN_BEFORE", "")
SINGLES = 100  # single-product requests per side and round
BATCH = 1_000
ROOT = Path(__file__).resolve().parents[1]


def _module_at(revision: str, path: str, name: str):
    """``path`` as it is at git ``revision``, imported as module ``name``."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    file = Path(tempfile.mkdtemp(prefix="bench-explain-")) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def _post(app, path: str, query: bytes, body: bytes) -> bytes:
    sent: list[dict] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": query,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"{path}?{query.decode()}: {sent[0]['status']} {sent[1]['body'][:300]!r}")
    return sent[1]["body"]


def _ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def main() -> None:
    from rakuten_mlops.data.generator import generate_frame
    from rakuten_mlops.model import build_pipeline
    from rakuten_mlops.model.runner import plan_for
    from rakuten_mlops.serving import fastpath, predictor
    from rakuten_mlops.serving.metrics import api_metrics
    from rakuten_mlops.serving.model_store import LoadedModel, freeze_heap
    from rakuten_mlops.serving.schemas import BatchIn, ProductIn

    frame = generate_frame(TRAIN_ROWS + BATCH, seed=7)
    frame["description"] = frame["description"].fillna("")
    train, held_out = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:]
    pipeline = build_pipeline("sgd").fit(train[["designation", "description"]], train["prdtypecode"])
    model = LoadedModel(
        "bench", "1", None, None, {}, {}, datetime.now(UTC), pipeline,
        pipeline.classes_.astype("int64"), runner=plan_for(pipeline),
    )  # fmt: skip
    store = SimpleNamespace(require=lambda: model)  # holds the loaded model, as ModelStore does
    products = [
        {"designation": d, "description": e}
        for d, e in zip(held_out["designation"], held_out["description"], strict=True)
    ]
    singles = [orjson.dumps(p) for p in products[:SINGLES]]
    batch = orjson.dumps({"items": products[:BATCH]})
    metrics = api_metrics()

    def endpoints(fastpath_module, predictor_module):
        service = predictor_module.PredictionService(store, None, metrics)
        return fastpath_module.PredictionEndpoints(None, service, ProductIn, BatchIn, 10_000_000)

    current = endpoints(fastpath, predictor)
    sides = {"default": (current, b""), "explain": (current, b"explain=true")}
    if BEFORE:
        before = endpoints(
            _module_at(BEFORE, "src/rakuten_mlops/serving/fastpath.py", "_before_fastpath"),
            _module_at(BEFORE, "src/rakuten_mlops/serving/predictor.py", "_before_predictor"),
        )
        sides[f"default @ {BEFORE}"] = (before, b"")

    freeze_heap()  # as the API does after its first model load

    async def run() -> dict[str, dict[str, list[float]]]:
        times = {w: {name: [] for name in sides} for w in ("single", "batch")}
        for app, query in sides.values():  # warm-up: the explainer is built on first use
            await _post(app, "/predict", query, singles[0])
        names = list(sides)
        for round_ in range(ROUNDS):
            turn = round_ % len(names)  # each side goes first in turn
            for name in names[turn:] + names[:turn]:
                app, query = sides[name]
                started = time.perf_counter()
                for body in singles:
                    await _post(app, "/predict", query, body)
                times["single"][name].append((time.perf_counter() - started) / len(singles))
                started = time.perf_counter()
                await _post(app, "/predict/batch", query, batch)
                times["batch"][name].append((time.perf_counter() - started) / BATCH)
        return times

    times = asyncio.run(run())
    load = os.getloadavg()
    rows = []
    for workload, by_side in times.items():
        us = {name: statistics.median(values) * 1e6 for name, values in by_side.items()}
        row = [
            workload,
            us["default"],
            us["explain"],
            f"{_ratio(by_side['explain'], by_side['default']):.2f}x",
        ]
        if BEFORE:
            before = by_side[f"default @ {BEFORE}"]
            row += [us[f"default @ {BEFORE}"], f"{_ratio(by_side['default'], before):.3f}x"]
        rows.append(row)
    print(
        f"default pipeline on {TRAIN_ROWS:,} generated rows; median us per item of {ROUNDS} alternating "
        f"rounds ({SINGLES} single requests, one {BATCH:,}-product batch); load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    headers = ["workload", "default us/item", "explain us/item", "explain / default"]
    if BEFORE:
        headers += [f"default @ {BEFORE} us/item", f"default / default @ {BEFORE}"]
    print_table(headers, rows)


if __name__ == "__main__":
    main()
