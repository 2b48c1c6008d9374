"""Predict page: one product through the API, and the latest logged predictions."""

from __future__ import annotations

from typing import Any

import pandas as pd

from rakuten_mlops.data.categories import category_name
from rakuten_mlops.settings import Settings
from rakuten_mlops.ui.api import PlatformAPI
from rakuten_mlops.ui.queries import ActionRefused, fetch_rows


def predict(
    settings: Settings, designation: str, description: str, k: int = 5, explain: bool = False
) -> dict[str, Any]:
    if not designation.strip():
        raise ActionRefused("the designation (product title) is required")
    return PlatformAPI(settings.api_url).predict(designation, description, k, explain)


EVIDENCE_COLUMNS = ["feature", "tfidf", "coefficient", "contribution"]


def evidence_frame(evidence: dict[str, Any]) -> pd.DataFrame:
    """One class's listed n-grams of an explanation (``/predict?explain=true``), largest first."""
    return pd.DataFrame(
        [[t[c] for c in EVIDENCE_COLUMNS] for t in evidence.get("tokens", [])], columns=EVIDENCE_COLUMNS
    )


def evidence_sum(evidence: dict[str, Any]) -> str:
    """How the class score adds up: intercept + the listed contributions + the rest."""
    listed = sum(t["contribution"] for t in evidence.get("tokens", []))
    return (
        f"score {evidence['score']:.3f} = intercept {evidence['intercept']:.3f}"
        f" + listed {listed:.3f} + other n-grams {evidence['rest']:.3f}"
    )


def top_k_frame(prediction: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"class": f"{c['prdtypecode']} {c['category']}", "probability": c["probability"]}
            for c in prediction.get("top_k", [])
        ],
        columns=["class", "probability"],
    )


def recent_predictions(settings: Settings, limit: int = 20) -> pd.DataFrame:
    from sqlalchemy import select

    from rakuten_mlops.db.models import Prediction as P

    rows = fetch_rows(
        settings,
        select(
            P.created_at,
            P.model_version,
            P.prdtypecode,
            P.confidence,
            P.text_length,
            P.word_count,
            P.productid,
        )
        .order_by(P.id.desc())
        .limit(limit),
    )
    frame = pd.DataFrame(
        rows,
        columns=[
            "created_at",
            "model_version",
            "prdtypecode",
            "confidence",
            "text_length",
            "word_count",
            "productid",
        ],
    )
    frame.insert(3, "category", [category_name(c) for c in frame["prdtypecode"]])
    return frame
