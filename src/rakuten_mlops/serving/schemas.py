"""Request and response bodies of the API (pydantic; they also make the OpenAPI schema)."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

# Defaults of RAKUTEN_MAX_TEXT_CHARS / RAKUTEN_MAX_BATCH_ITEMS (request_models() for others).
MAX_TEXT_CHARS = 10_000
MAX_BATCH_ITEMS = 1_000
TOP_K_MAX = 27
EXPLAIN_TOP_DEFAULT = 5  # features listed per class when ``explain_top`` is not given
EXPLAIN_TOP_MAX = 20

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Id = Annotated[int, Field(ge=0, le=2**63 - 1)]


class ProductIn(BaseModel):
    """One product to classify: French title (required) and description (optional)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "designation": "Manette sans fil Nintendo Switch Pro noire",
                    "description": "Manette officielle, batterie rechargeable, vibrations HD.",
                    "productid": 4252011632,
                }
            ]
        },
    )

    designation: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS, description="Product title.")]
    description: Text | None = Field(default=None, description="Product description (may be empty).")
    productid: Id | None = None
    imageid: Id | None = None

    @field_validator("designation")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("designation must not be empty or blank")
        return value


class BatchIn(BaseModel):
    items: Annotated[
        list[ProductIn],
        Field(min_length=1, max_length=MAX_BATCH_ITEMS, description="Up to 1,000 products."),
    ]


@functools.cache
def request_models(max_text_chars: int, max_batch_items: int) -> tuple[type[ProductIn], type[BatchIn]]:
    """``ProductIn`` and ``BatchIn`` with the configured limits (the module's classes for the defaults)."""
    if (max_text_chars, max_batch_items) == (MAX_TEXT_CHARS, MAX_BATCH_ITEMS):
        return ProductIn, BatchIn
    text = Annotated[str, Field(max_length=max_text_chars)]
    product = create_model(
        "ProductIn",
        __base__=ProductIn,
        designation=(
            Annotated[str, Field(min_length=1, max_length=max_text_chars, description="Product title.")],
            ...,
        ),
        description=(text | None, Field(default=None, description="Product description (may be empty).")),
    )
    batch = create_model(
        "BatchIn",
        __base__=BatchIn,
        items=(
            Annotated[
                list[product],
                Field(
                    min_length=1,
                    max_length=max_batch_items,
                    description=f"Up to {max_batch_items:,} products.",
                ),
            ],
            ...,
        ),
    )
    return product, batch


class ClassScore(BaseModel):
    prdtypecode: int
    category: str
    probability: float


class FeatureContribution(BaseModel):
    feature: str = Field(description='Column and n-gram as the model sees them, e.g. designation:"manette".')
    column: Literal["designation", "description"]
    term: str = Field(description="The word or word pair (lowercased, accents folded).")
    tfidf: float = Field(
        description="The product's value of this feature in the TF-IDF matrix (column weight included)."
    )
    coefficient: float = Field(description="The class's coefficient of this feature.")
    contribution: float = Field(description="tfidf x coefficient: this feature's share of the class score.")


class ClassEvidence(BaseModel):
    prdtypecode: int
    category: str
    score: float = Field(description="The class's decision value (before the softmax temperature).")
    intercept: float
    tokens: list[FeatureContribution] = Field(
        description="Features pushing toward this class (positive contributions only), largest first; "
        "at most explain_top."
    )
    rest: float = Field(
        description="Sum of every other feature's contribution: intercept + tokens + rest = score."
    )


class Explanation(BaseModel):
    temperature: float = Field(description="The model's probabilities are softmax(temperature x score).")
    predicted: ClassEvidence = Field(description="What pushed the predicted class most.")
    runner_up: ClassEvidence = Field(
        description="The strongest evidence for the class with the next highest score."
    )


class PredictionOut(BaseModel):
    prdtypecode: int
    category: str = Field(description="Human-readable (French) category name.")
    confidence: float
    top_k: list[ClassScore]
    model_version: str
    prediction_id: str
    explanation: Explanation | None = Field(
        default=None, description="Only with ?explain=true; absent otherwise."
    )


class BatchOut(BaseModel):
    predictions: list[PredictionOut] = Field(description="One prediction per item, in input order.")
    model_version: str


class ModelOut(BaseModel):
    loaded: bool
    name: str
    version: str | None
    alias: str | None
    pinned_version: str | None
    run_id: str | None
    scores: dict[str, float]
    loaded_at: datetime | None
    registry_reachable: bool | None
    registry_checked_at: datetime | None
    last_error: str | None
    n_classes: int
    poll_seconds: float


class ReadyOut(BaseModel):
    ready: bool
    model_version: str | None = None
    reason: str | None = None


class ReloadIn(BaseModel):
    force: bool = Field(default=False, description="Reload even when the registry names the served version.")


class ReloadOut(BaseModel):
    changed: bool
    model_version: str | None
    previous_version: str | None


class RollbackIn(BaseModel):
    to: str | None = Field(
        default=None, max_length=32, description="Version to go back to (default: previous)."
    )
    reason: str = Field(default="", max_length=2_000)


class RollbackOut(BaseModel):
    production_version: str | None
    previous_version: str | None
    model_version: str | None = Field(description="Version this API serves after the rollback.")


class RetrainOut(BaseModel):
    id: str
    mode: Literal["local", "kubernetes"]
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    decision: dict | None = None
    log_tail: str | None = None
    status_url: str


# --- label feedback (POST /feedback) -------------------------------------------------------

MAX_FEEDBACK_ITEMS = 1_000


def _known_codes() -> list[int]:
    from rakuten_mlops.data.categories import load_categories

    return sorted(load_categories())


class FeedbackItemIn(BaseModel):
    """The true class of one logged prediction, named by ``prediction_id`` or by ``productid``
    (then the latest logged prediction of that product)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "prediction_id": "0c5c3d0e9f6a4b1d8e2f7a9b3c4d5e6f-000",
                    "prdtypecode": 2583,
                    "source": "moderation",
                }
            ]
        },
    )

    prediction_id: str | None = Field(
        default=None, min_length=1, max_length=36, description="`prediction_id` of a /predict answer."
    )
    productid: Id | None = Field(
        default=None, description="Instead of prediction_id: the latest logged prediction of this product."
    )
    prdtypecode: int = Field(
        description="The true product type code (one of the 27).",
        json_schema_extra={"enum": _known_codes()},
    )
    source: str = Field(
        default="unspecified",
        min_length=1,
        max_length=64,
        description="Who says so (merchant, moderation, ...); part of what makes a label a repeat.",
    )

    @field_validator("prdtypecode")
    @classmethod
    def _known_code(cls, value: int) -> int:
        from rakuten_mlops.data.categories import load_categories

        if value not in load_categories():
            raise ValueError(f"unknown prdtypecode {value}: not one of the 27 product type codes")
        return value

    @model_validator(mode="after")
    def _one_reference(self) -> FeedbackItemIn:
        if (self.prediction_id is None) == (self.productid is None):
            raise ValueError("give exactly one of prediction_id and productid")
        return self


class FeedbackIn(BaseModel):
    items: Annotated[
        list[FeedbackItemIn],
        Field(
            min_length=1, max_length=MAX_FEEDBACK_ITEMS, description="Up to 1,000 labels, stored all or none."
        ),
    ]


class FeedbackItemOut(BaseModel):
    index: int = Field(description="Position of the item in the request.")
    prediction_id: str
    prdtypecode: int
    status: Literal["stored", "unchanged"] = Field(
        description="stored: a new label row; unchanged: the prediction already has this label from this source."
    )
    model_version: str = Field(description="Model version that made the prediction.")
    previous_prdtypecode: int | None = Field(
        default=None, description="The label this one supersedes (the newest label wins)."
    )


class FeedbackOut(BaseModel):
    stored: int = Field(description="Labels written.")
    unchanged: int = Field(description="Labels already known (same code, same source): nothing written.")
    replaced: int = Field(description="Of the stored, those that changed an earlier label's code.")
    items: list[FeedbackItemOut]
