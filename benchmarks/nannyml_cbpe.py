"""NannyML's CBPE on the windows ``bench_estimate --save DIR`` kept (run in a venv with nannyml).

Per seed, the reference is the four strength-0 windows together (labelled, no drift); every
window is then one analysis chunk. Prints ``{window: {"accuracy": .., "f1_macro": ..}}`` as JSON.
NannyML's multiclass F1 is the macro average; CBPE recalibrates the probabilities on the
reference (isotonic) before estimating.

    /tmp/nanny-venv/bin/python benchmarks/nannyml_cbpe.py DIR
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


def frame(path: Path) -> pd.DataFrame:
    data = np.load(path)
    proba, truth, classes = data["proba"], data["truth"], data["classes"]
    out = pd.DataFrame({f"p_{c}": proba[:, i] for i, c in enumerate(classes)})
    out["y_pred"] = classes[proba.argmax(axis=1)].astype(str)
    out["y_true"] = truth.astype(str)
    return out


def main() -> None:
    import nannyml as nml

    warnings.filterwarnings("ignore")
    folder = Path(sys.argv[1])
    results = {}
    seeds = sorted({p.name.split("_")[0] for p in folder.glob("w*_*.npz")})
    for seed in seeds:
        reference = pd.concat([frame(p) for p in folder.glob(f"{seed}_*_0.0.npz")], ignore_index=True)
        classes = [c[2:] for c in reference.columns if c.startswith("p_")]
        for path in sorted(folder.glob(f"{seed}_*.npz")):
            analysis = frame(path)
            present = [c for c in classes if f"p_{c}" in analysis.columns]
            cbpe = nml.CBPE(
                y_pred_proba={c: f"p_{c}" for c in present},
                y_pred="y_pred",
                y_true="y_true",
                problem_type="classification_multiclass",
                metrics=["accuracy", "f1"],
                chunk_number=1,
            )
            cbpe.fit(reference)
            table = cbpe.estimate(analysis.drop(columns=["y_true"])).filter(period="analysis").to_df()
            results[path.stem] = {
                "accuracy": float(table[("accuracy", "value")].iloc[0]),
                "f1_macro": float(table[("f1", "value")].iloc[0]),
            }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
