"""The compiled runner vs the plain pipeline, with and without scikit-learn's fast config.

What the API would run instead of :class:`~rakuten_mlops.model.runner.CompiledLinearPipeline`:
the plain pipeline (``WholePipeline``: ``predict_proba`` on a DataFrame, then the prediction-log
features), as is and inside ``sklearn.config_context(assume_finite=True,
skip_parameter_validation=True)``, which turns off the finiteness checks and the parameter
validation of every call. Same model (the default pipeline on BENCH_RUNNER_ROWS generated rows,
default 20,000), same products; the three sides alternate, medians of BENCH_RUNNER_ROUNDS
(default 15) calls per batch size.
"""

from __future__ import annotations

import os
import statistics
import time

from benchmarks.common import print_table

TRAIN_ROWS = int(os.environ.get("BENCH_RUNNER_ROWS", "20000"))
ROUNDS = int(os.environ.get("BENCH_RUNNER_ROUNDS", "15"))
BATCHES = (1, 16, 1000)


def main() -> None:
    import sklearn

    from rakuten_mlops.data.generator import generate_frame
    from rakuten_mlops.model import build_pipeline
    from rakuten_mlops.model.runner import CompiledLinearPipeline, WholePipeline

    frame = generate_frame(TRAIN_ROWS + max(BATCHES), seed=7)
    frame["description"] = frame["description"].fillna("")
    train, held_out = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:]
    pipeline = build_pipeline("sgd").fit(train[["designation", "description"]], train["prdtypecode"])
    compiled, whole = CompiledLinearPipeline(pipeline), WholePipeline(pipeline)

    def fast_config(designations, descriptions):
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return whole.run(designations, descriptions)

    sides = {"compiled runner": compiled.run, "pipeline": whole.run, "pipeline, fast config": fast_config}
    rows = []
    for size in BATCHES:
        designations = held_out["designation"].tolist()[:size]
        descriptions = held_out["description"].tolist()[:size]
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(ROUNDS):
            for name, run in sides.items():
                started = time.perf_counter()
                run(designations, descriptions)
                times[name].append(time.perf_counter() - started)
        ms = {name: statistics.median(values) * 1000 for name, values in times.items()}
        rows.append(
            [size, ms["compiled runner"], ms["pipeline"], ms["pipeline, fast config"],
             f"{ms['pipeline'] / ms['compiled runner']:.1f}x",
             f"{ms['pipeline, fast config'] / ms['compiled runner']:.1f}x"]
        )  # fmt: skip
    print(
        f"default pipeline on {TRAIN_ROWS:,} generated rows; median ms per call of {ROUNDS} alternating rounds"
    )
    print_table(
        [
            "products",
            "compiled ms",
            "pipeline ms",
            "fast config ms",
            "pipeline / compiled",
            "fast config / compiled",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
