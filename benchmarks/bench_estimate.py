"""Estimated against realized performance under every drift kind of the generator.

For each seed, an sgd pipeline is trained on generated rows (as ``rakuten-mlops train`` does,
test split held out). For each drift kind (class-prior, vocabulary, length, language) and
strength (0, 0.25, 0.5, 0.75, 1.0), a window of generated products is scored; its realized
weighted F1 (labels known) is compared with:

- the estimate from the full float64 probabilities (the estimator itself),
- the estimate from the probabilities as the prediction log stores them: top-5 codes + float16
  probabilities with the rest spread evenly (``model.probabilities``), and the peers float16
  27-vector and top-3,
- the plain "mean of the top probability" estimator (expected accuracy, read as the F1).

Reported per drift kind and strength: mean absolute error (MAE), the share of windows whose
90 % interval covers the realized value, and how often the trust checks flag the window.
``--nannyml PYTHON`` also runs NannyML's CBPE on the same saved windows in that interpreter (a
separate venv: NannyML cannot be installed beside our pins, see docs/monitoring.md).

``--request-path`` measures instead what logging the probabilities costs a request: the API's
``PredictionService`` (compiled runner, response building, prediction-log records formatted as
Postgres COPY text) with the top-5 probabilities logged against the same service without them
(the log's old layout), alternating rounds, median time per request at batch sizes 1 and 16.

    python -m benchmarks.bench_estimate [--seeds 3] [--train-rows 20000] [--window-rows 2000]
    python -m benchmarks.bench_estimate --request-path [--rounds 400]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import print_table

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _train(rows: int, seed: int):
    from rakuten_mlops.data.generator import generate_frame
    from rakuten_mlops.data.loader import split_for
    from rakuten_mlops.model.pipeline import build_pipeline
    from rakuten_mlops.training.dataset import INPUT_COLUMNS, LabelledSplit
    from rakuten_mlops.training.evaluate import evaluate

    frame = generate_frame(rows, seed, first_productid=10_000_000 * (seed + 1))
    test = np.array([split_for(int(p)) == "test" for p in frame["productid"]])
    pipeline = build_pipeline("sgd")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        pipeline.fit(frame.loc[~test, list(INPUT_COLUMNS)], frame.loc[~test, "prdtypecode"])
    held_out = LabelledSplit(frame.loc[test].reset_index(drop=True), "bench")
    return pipeline, evaluate(pipeline, held_out)


def _stored(proba: np.ndarray, classes: np.ndarray, kind: str) -> np.ndarray:
    """``proba`` after a round trip through one storage format."""
    from rakuten_mlops.model.probabilities import decode_many, encode, expand
    from rakuten_mlops.model.runner import top_k

    if kind == "float16":
        out = proba.astype(np.float16).astype(np.float64)
        return out / out.sum(axis=1, keepdims=True)
    k = {"top5": 5, "top3": 3}[kind]
    top, top_p = top_k(proba, 5)
    codes, probs = classes[top], top_p.copy()
    if k < 5:  # the peer format: the same layout with two fewer entries (zeros are "not logged")
        probs[:, k:] = 0.0
    blobs = [encode(c, p) for c, p in zip(codes.tolist(), probs.tolist(), strict=True)]
    return expand(*decode_many(blobs), classes)


def _windows(args) -> list[dict]:
    from rakuten_mlops.data.generator import DRIFT_KINDS, generate_frame
    from rakuten_mlops.model.features import prediction_features
    from rakuten_mlops.monitoring.estimate import Reference, trust_checks
    from rakuten_mlops.monitoring.performance import estimate, realized

    results = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        pipeline, evaluation = _train(args.train_rows, seed)
        classes = np.asarray(pipeline.classes_)
        reference = Reference.from_metrics(
            {**evaluation.metrics, "reference_class_shares": evaluation.class_shares}
        )
        print(
            f"seed {seed}: trained in {time.perf_counter() - start:.1f}s, test weighted F1 "
            f"{evaluation.f1_weighted:.4f}, ECE {evaluation.calibration.ece:.4f} "
            f"(floor {evaluation.calibration.floor:.4f})",
            flush=True,
        )
        for kind in DRIFT_KINDS:
            for strength in STRENGTHS:
                window_seed = 1000 + seed * 100 + DRIFT_KINDS.index(kind) * 10 + int(strength * 4)
                frame = generate_frame(args.window_rows, window_seed, drift=kind, drift_strength=strength)
                inputs = frame[["designation", "description"]]
                proba = np.asarray(pipeline.predict_proba(inputs))
                truth = frame["prdtypecode"].to_numpy()
                real_all = realized(truth, classes[proba.argmax(axis=1)])
                real = real_all["f1_weighted"]
                oov = prediction_features(pipeline, inputs)["oov_rate"].to_numpy()
                checks = trust_checks(oov, proba.max(axis=1), reference, classes[proba.argmax(axis=1)])
                row = {
                    "seed": seed, "kind": kind, "strength": strength, "realized": real,
                    "trusted": all(c["ok"] for c in checks),
                    "oov_shift": float(oov.mean()) - reference.oov_rate,
                    "confidence_shift": float(proba.max(axis=1).mean()) - reference.confidence,
                    "top_probability": float(proba.max(axis=1).mean()),
                }  # fmt: skip
                for name, stored in (
                    ("float64", proba), ("top5", _stored(proba, classes, "top5")),
                    ("float16", _stored(proba, classes, "float16")), ("top3", _stored(proba, classes, "top3")),
                ):  # fmt: skip
                    est = estimate(stored, classes, margin=reference.calibration_error)
                    row[name] = est.f1_weighted
                    row[f"{name}_interval"] = est.intervals["f1_weighted"]
                    if name == "float64":
                        row.update(est_accuracy=est.accuracy, est_f1_macro=est.f1_macro)
                row.update(realized_accuracy=real_all["accuracy"], realized_f1_macro=real_all["f1_macro"])
                if args.save:
                    np.savez_compressed(
                        Path(args.save) / f"w{seed}_{kind}_{strength}.npz",
                        proba=proba,
                        truth=truth,
                        classes=classes,
                    )
                results.append(row)
    return results


def _nannyml(python: str, folder: str, rows: list[dict]) -> None:
    """NannyML's CBPE (fitted on each seed's strength-0 class-prior window as reference) in ``python``."""
    script = Path(__file__).with_name("nannyml_cbpe.py")
    env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}  # NannyML reports usage to segment.io otherwise
    out = subprocess.run([python, str(script), folder], capture_output=True, text=True, check=True, env=env)
    estimates = json.loads(out.stdout)
    for row in rows:
        got = estimates.get(f"w{row['seed']}_{row['kind']}_{row['strength']}") or {}
        row["nannyml_accuracy"], row["nannyml_f1_macro"] = got.get("accuracy"), got.get("f1_macro")


def _nannyml_summary(rows: list[dict]) -> None:
    """Accuracy and macro F1 (what NannyML's multiclass CBPE estimates): ours against NannyML's."""
    from rakuten_mlops.data.generator import DRIFT_KINDS

    table = []
    for kind in DRIFT_KINDS:
        for strength in STRENGTHS:
            group = [r for r in rows if r["kind"] == kind and r["strength"] == strength]

            def mae(key: str, truth: str, group=group) -> str:
                values = [abs(r[key] - r[truth]) for r in group if r.get(key) is not None]
                return f"{np.mean(values):.3f}" if values else "-"

            table.append(
                [kind, f"{strength:.2f}", mae("est_accuracy", "realized_accuracy"),
                 mae("nannyml_accuracy", "realized_accuracy"), mae("est_f1_macro", "realized_f1_macro"),
                 mae("nannyml_f1_macro", "realized_f1_macro")]
            )  # fmt: skip
    headers = ["drift", "strength", "MAE accuracy ours", "NannyML", "MAE macro F1 ours", "NannyML"]
    print_table(headers, table)
    calm = [r for r in rows if r["trusted"] and r.get("nannyml_accuracy") is not None]
    for key, truth in (("est_accuracy", "realized_accuracy"), ("nannyml_accuracy", "realized_accuracy"),
                       ("est_f1_macro", "realized_f1_macro"), ("nannyml_f1_macro", "realized_f1_macro")):  # fmt: skip
        print(
            f"windows not flagged ({len(calm)}): MAE {key} {np.mean([abs(r[key] - r[truth]) for r in calm]):.4f}"
        )


def _summary(rows: list[dict], estimators: list[str]) -> None:
    from rakuten_mlops.data.generator import DRIFT_KINDS

    table = []
    for kind in DRIFT_KINDS:
        for strength in STRENGTHS:
            group = [r for r in rows if r["kind"] == kind and r["strength"] == strength]
            line = [kind, f"{strength:.2f}", f"{np.mean([r['realized'] for r in group]):.3f}"]
            for name in estimators:
                values = [r[name] for r in group if r.get(name) is not None]
                line.append(
                    f"{np.mean([abs(v - r['realized']) for v, r in zip(values, group, strict=False)]):.3f}"
                    if values
                    else "-"
                )  # noqa: E501
            covered = [r["float64_interval"][0] <= r["realized"] <= r["float64_interval"][1] for r in group]
            line += [f"{np.mean(covered):.0%}", f"{np.mean([not r['trusted'] for r in group]):.0%}"]
            table.append(line)
    headers = ["drift", "strength", "realized F1", *[f"MAE {n}" for n in estimators], "90% covers", "flagged"]
    print_table(headers, table)
    calm = [r for r in rows if r["trusted"]]
    for name in estimators:
        values = [(r[name], r["realized"]) for r in calm if r.get(name) is not None]
        if values:
            print(
                f"windows not flagged ({len(values)}): MAE {name} {np.mean([abs(a - b) for a, b in values]):.4f}"
            )
    cover = np.mean([r["float64_interval"][0] <= r["realized"] <= r["float64_interval"][1] for r in calm])
    print(f"windows not flagged: 90% interval covers the realized value in {cover:.0%}")


def _request_path(rounds: int) -> None:
    import asyncio
    import statistics
    from datetime import UTC, datetime

    from rakuten_mlops.data.generator import generate_frame
    from rakuten_mlops.model.pipeline import build_pipeline
    from rakuten_mlops.model.runner import plan_for
    from rakuten_mlops.serving import predictor
    from rakuten_mlops.serving.metrics import api_metrics
    from rakuten_mlops.serving.model_store import LoadedModel
    from rakuten_mlops.serving.prediction_log import PredictionLog
    from rakuten_mlops.serving.schemas import ProductIn

    frame = generate_frame(20_000, seed=7)
    pipeline = build_pipeline("sgd").fit(frame[["designation", "description"]], frame["prdtypecode"])
    model = LoadedModel(
        "bench", "1", "production", None, {}, {}, datetime.now(UTC), pipeline,
        __import__("numpy").asarray(pipeline.classes_), plan_for(pipeline),
    )  # fmt: skip
    log = PredictionLog(
        "postgresql+psycopg2://bench@127.0.0.1/unused", max_queue=10**9
    )  # COPY text, no writer
    service = predictor.PredictionService(store=None, prediction_log=log, metrics=api_metrics())
    products = [
        ProductIn(designation=d, description=e)
        for d, e in zip(frame["designation"], frame["description"], strict=True)
    ]  # noqa: E501
    real_encode, real_k = predictor.encode, predictor.LOGGED_TOP_K

    def use(with_probabilities: bool) -> None:
        predictor.encode = real_encode if with_probabilities else (lambda codes, p: None)
        predictor.LOGGED_TOP_K = real_k if with_probabilities else 1

    def one(batch) -> float:
        job = predictor._Job([p.designation for p in batch], [p.description for p in batch],
                             [p.productid for p in batch], 3, asyncio.Future(loop=loop), 0)  # fmt: skip
        start = time.perf_counter()
        service._run(model, [job])
        elapsed = time.perf_counter() - start
        log._queue.clear()
        log._queued_rows = 0
        return elapsed

    loop = asyncio.new_event_loop()
    rows = []
    for size in (1, 16):
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(rounds):
            batch = products[(r * size) % 19_000 : (r * size) % 19_000 + size]
            for side in (True, False) if r % 2 else (False, True):
                use(side)
                times[side].append(one(batch))
        use(True)
        with_p, without = statistics.median(times[True]), statistics.median(times[False])
        rows.append([size, f"{without * 1e6:.0f}", f"{with_p * 1e6:.0f}", f"{with_p / without:.3f}"])
    print_table(["batch", "without probabilities (us)", "with top-5 probabilities (us)", "ratio"], rows)
    print(f"load average {os.getloadavg()[0]:.1f}, {rounds} alternating rounds per batch size")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--window-rows", type=int, default=2_000)
    parser.add_argument("--nannyml", metavar="PYTHON", help="interpreter of a venv with nannyml installed")
    parser.add_argument("--save", metavar="DIR", help="keep the windows (npz) for other estimators")
    parser.add_argument("--json", metavar="FILE", help="write every window's numbers to FILE")
    parser.add_argument("--request-path", action="store_true", help="measure the request path's cost instead")
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    if args.request_path:
        _request_path(args.rounds)
        return
    print(f"load average {os.getloadavg()[0]:.1f}; {args.seeds} seeds, {args.train_rows:,} training rows, "
          f"windows of {args.window_rows:,} rows")  # fmt: skip
    tmp = None
    if args.nannyml and not args.save:
        tmp = tempfile.TemporaryDirectory()
        args.save = tmp.name
    rows = _windows(args)
    estimators = ["float64", "top5", "float16", "top3", "top_probability"]
    _summary(rows, estimators)
    if args.nannyml:
        _nannyml(args.nannyml, args.save, rows)
        _nannyml_summary(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
