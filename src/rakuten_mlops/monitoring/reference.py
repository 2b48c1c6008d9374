"""The production model and its reference data: the rows it was trained on (its ``batch_ids``
lineage), measured with the same features the API logs for every prediction.

The model's own outputs (predicted class, confidence) and the out-of-vocabulary rate are biased
on rows the model was fitted on: confidence on training rows flags drift against windows of the
same distribution. Those columns are therefore taken
from the lineage's held-out rows (``split = test``); the input-only features (length, word
count, empty description) use every sampled lineage row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rakuten_mlops.model.features import FEATURE_COLUMNS
from rakuten_mlops.monitoring.stattests import MODEL_COLUMNS
from rakuten_mlops.settings import Settings

SAMPLE_SEED = 0


@dataclass
class ProductionModel:
    version: str
    batch_ids: list[int]
    pipeline: Any
    tags: dict[str, str]


def load_production_model(settings: Settings) -> ProductionModel | None:
    """The production pipeline (loaded by its version number, so an alias move mid-run cannot mix
    two models) with its lineage; None when no version carries the production alias."""
    from rakuten_mlops.model.loading import load_pipeline, model_uri
    from rakuten_mlops.registry import production_lineage, registry_errors

    mv = production_lineage(settings)
    if mv is None:
        return None
    with registry_errors(settings):
        pipeline = load_pipeline(model_uri(settings.registered_model, version=mv.version))
    return ProductionModel(mv.version, mv.batch_ids, pipeline, mv.tags)


def model_outputs(pipeline: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """What the API logs per prediction: ``prediction_features`` + predicted class + confidence."""
    from rakuten_mlops.model.features import prediction_features

    inputs = frame[["designation", "description"]]
    out = prediction_features(pipeline, inputs)
    if len(inputs):
        proba = np.asarray(pipeline.predict_proba(inputs))
        out["prdtypecode"] = np.asarray(pipeline.classes_)[proba.argmax(axis=1)].astype(np.int64)
        out["confidence"] = proba.max(axis=1)
    else:
        out["prdtypecode"] = pd.Series(dtype=np.int64)
        out["confidence"] = pd.Series(dtype=np.float64)
    return out


def lineage_products(settings: Settings, batch_ids: list[int]) -> pd.DataFrame:
    """Products of the given load batches (designation, description, split)."""
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Product

    upgrade(settings.database_url)
    if not batch_ids:
        return pd.DataFrame(columns=["productid", "designation", "description", "split"])
    query = (
        select(Product.productid, Product.designation, Product.description, Product.split)
        .where(Product.batch_id.in_(batch_ids))
        .order_by(Product.productid)
    )
    with engine_for(settings.database_url).connect() as conn:
        return pd.DataFrame(
            conn.execute(query).all(), columns=["productid", "designation", "description", "split"]
        )


def reference_frame(settings: Settings, model: ProductionModel) -> pd.DataFrame:
    """Monitoring features of up to ``drift_reference_rows`` lineage rows (model columns: held-out rows only)."""
    from rakuten_mlops.model.features import prediction_features

    products = lineage_products(settings, model.batch_ids)
    if len(products) > settings.drift_reference_rows:
        products = products.sample(n=settings.drift_reference_rows, random_state=SAMPLE_SEED)
    held_out = products["split"] == "test"
    parts = []
    if held_out.any():
        parts.append(model_outputs(model.pipeline, products[held_out]))
    if (~held_out).any():
        fitted = prediction_features(model.pipeline, products.loc[~held_out, ["designation", "description"]])
        parts.append(fitted.assign(**{column: np.nan for column in MODEL_COLUMNS}))
    if not parts:
        return pd.DataFrame(columns=[*FEATURE_COLUMNS, "prdtypecode", "confidence"])
    return normalise(pd.concat(parts, ignore_index=True))


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column for reference and current alike (NaN = not measured for that row)."""
    out = frame[[*FEATURE_COLUMNS, "prdtypecode", "confidence"]].copy()
    for column in ("text_length", "word_count", "oov_rate", "prdtypecode", "confidence"):
        out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    out["description_empty"] = out["description_empty"].astype(bool)
    return out.reset_index(drop=True)
