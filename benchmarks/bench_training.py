"""Training time and weighted F1 of the default classifier at 20k and 85k generated rows, as ratios
against peers run here on the same rows: logistic regression (`--model logreg`) and character
n-gram TF-IDF (the usual choice in Rakuten notebooks, far costlier). Budget: 85k rows <= 60 s."""

from __future__ import annotations

import time
import warnings

from benchmarks.common import print_table

SIZES = (20_000, 85_000)
BUDGET_SECONDS = 60.0


def _char_ngram_pipeline():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from rakuten_mlops.model.pipeline import build_pipeline

    pipeline = build_pipeline("sgd")
    for column in ("designation", "description"):
        pipeline.set_params(
            **{
                f"features__{column}": TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), min_df=2, max_features=300_000, sublinear_tf=True
                )
            }
        )
    return pipeline


def _split(rows: int):
    from rakuten_mlops.data.generator import generate_frame
    from rakuten_mlops.data.loader import split_for

    frame = generate_frame(rows, seed=42)
    is_test = frame["productid"].map(split_for).eq("test").to_numpy()
    return frame[~is_test], frame[is_test]


def _fit_and_score(pipeline, train, test) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline.fit(train, train["prdtypecode"].to_numpy())
    seconds = time.perf_counter() - start
    return seconds, float(f1_score(test["prdtypecode"], pipeline.predict(test), average="weighted"))


def main() -> None:
    from rakuten_mlops.model.pipeline import build_pipeline

    rows_out = []
    verdicts = []
    for rows in SIZES:
        train, test = _split(rows)
        peers = [("sgd word 1-2 gram (default)", lambda: build_pipeline("sgd"))]
        peers.append(("logreg word 1-2 gram", lambda: build_pipeline("logreg")))
        if rows <= 20_000:  # character n-grams at 85k rows take minutes: one size is enough to compare
            peers.append(("sgd char_wb 2-5 gram", _char_ngram_pipeline))
        base_seconds = base_f1 = None
        for name, make in peers:
            seconds, f1 = _fit_and_score(make(), train, test)
            if base_seconds is None:
                base_seconds, base_f1 = seconds, f1
            rows_out.append(
                [
                    f"{rows:,}",
                    name,
                    f"{len(train):,}",
                    seconds,
                    f"{seconds / base_seconds:.2f}x",
                    f"{f1:.4f}",
                    f"{f1 - base_f1:+.4f}",
                ]
            )
        if rows == max(SIZES):
            ok = "within" if base_seconds <= BUDGET_SECONDS else "OVER"
            verdicts.append(
                f"default at {rows:,} rows: {base_seconds:.1f}s, {ok} the {BUDGET_SECONDS:.0f}s budget"
            )
    print_table(
        ["rows", "model", "train rows", "fit s", "time vs default", "weighted F1", "F1 - default"], rows_out
    )
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
