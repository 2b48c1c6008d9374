"""Request and response bodies of the API (pydantic; they also make the OpenAPI schema).

The request models are strict (``STRICT_REQUEST``): a field declared integer takes a JSON integer
only, never ``"1"``, ``1.0`` or ``true``; a string field takes a JSON string only, never ``123``.
Every rule a request model enforces is in its JSON schema too (the non-blank title is a
``pattern``, the one-reference rule of a label a ``oneOf``), so the OpenAPI document says what is
accepted, and a request valid against it is accepted.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

# Defaults of RAKUTEN_MAX_TEXT_CHARS / RAKUTEN_MAX_BATCH_ITEMS (request_models() for others).
MAX_TEXT_CHARS = 10_000
MAX_BATCH_ITEMS = 1_000
TOP_K_MAX = 27
EXPLAIN_TOP_DEFAULT = 5  # features listed per class when ``explain_top`` is not given
EXPLAIN_TOP_MAX = 20

# Request bodies: JSON types as declared, no coercion (the fast path validates JSON bytes, the
# FastAPI routes the parsed objects: strict mode refuses the same inputs in both).
STRICT_REQUEST = ConfigDict(strict=True)
# At least one character that is not whitespace. The class is spelt out because ``\s`` differs
# between regex dialects: Python's whitespace (``str.isspace``) has U+001C..U+001F, Rust's and
# Python's have U+0085, JSON Schema's (ECMA-262) has U+FEFF instead; a title of only these
# characters is blank in all of them, so pydantic's (Rust) check, the OpenAPI document and any
# client's validator agree. ``errors.py`` words the refusal.
NOT_BLANK = r"[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
# No NUL character: PostgreSQL text cannot hold one (the label feedback and the registry's
# tags are stored there).
NO_NUL = r"^[^\x00]*$"

# The largest integer every JSON parser holds exactly (a double's 53 bits): above it a schema
# validator working in doubles cannot tell the maximum from the next integers.
MAX_ID = 2**53 - 1


def _integral(value: float) -> int:
    if not value.is_integer():
        raise PydanticCustomError("int_from_float", "Input should be a valid integer")
    return int(value)


# A JSON Schema integer: a JSON number without a fractional part (``690``, and ``690.0`` or
# ``6.9e2`` too, which JSON Schema counts as integers), never a string or a boolean.
_INTEGER = core_schema.union_schema(
    [
        core_schema.int_schema(strict=True),
        core_schema.no_info_after_validator_function(_integral, core_schema.float_schema(strict=True)),
    ],
    mode="left_to_right",
    custom_error_type="int_type",
)


def json_integer(ge: int | None = None, le: int | None = None):
    """The ``int`` type of a request field: a JSON Schema ``integer`` between ``ge`` and ``le``."""
    bounds = {k: v for k, v in (("ge", ge), ("le", le)) if v is not None}
    schema = (
        core_schema.chain_schema([_INTEGER, core_schema.int_schema(strict=True, **bounds)])
        if bounds
        else _INTEGER
    )
    names = {"ge": "minimum", "le": "maximum"}
    json_schema = {"type": "integer", **{names[k]: v for k, v in bounds.items()}}
    return Annotated[int, GetPydanticSchema(lambda _type, _handler: schema, lambda _s, _h: json_schema)]


Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Id = json_integer(ge=0, le=MAX_ID)


def title_field(max_chars: int):
    """The ``designation`` type: a string of 1 to ``max_chars`` characters, not blank."""
    return Annotated[
        str,
        Field(
            min_length=1,
            max_length=max_chars,
            pattern=NOT_BLANK,
            description="Product title: at least one character that is not whitespace.",
        ),
    ]


Title = title_field(MAX_TEXT_CHARS)


class ProductIn(BaseModel):
    """One product to classify: French title (required) and description (optional)."""

    model_config = ConfigDict(
        **STRICT_REQUEST,
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

    designation: Title
    description: Text | None = Field(default=None, description="Product description (may be empty).")
    productid: Id | None = None
    imageid: Id | None = None


class BatchIn(BaseModel):
    model_config = STRICT_REQUEST

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
        designation=(title_field(max_text_chars), ...),
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


class ProblemOut(BaseModel):
    field: str = Field(description="The offending field, e.g. items[3].designation.")
    message: str
    type: str = Field(description="The kind of problem (pydantic's error type, or unknown).")


class ErrorOut(BaseModel):
    """Every error body: one sentence; for bad input the field named and every problem found."""

    error: str
    field: str | None = Field(default=None, description="The offending field (absent when none is).")
    detail: list[ProblemOut] | None = Field(default=None, description="Every problem found (bad input).")


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
    model_config = STRICT_REQUEST

    force: bool = Field(default=False, description="Reload even when the registry names the served version.")


class ReloadOut(BaseModel):
    changed: bool
    model_version: str | None
    previous_version: str | None


class RollbackIn(BaseModel):
    model_config = STRICT_REQUEST

    to: str | None = Field(
        default=None, max_length=32, pattern=NO_NUL, description="Version to go back to (default: previous)."
    )
    reason: str = Field(default="", max_length=2_000, pattern=NO_NUL)


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
        **STRICT_REQUEST,
        extra="forbid",
        json_schema_extra={
            # exactly one reference: the rule of ``_one_reference`` as JSON Schema
            "oneOf": [
                {"required": ["prediction_id"], "properties": {"prediction_id": {"type": "string"}}},
                {"required": ["productid"], "properties": {"productid": {"type": "integer"}}},
            ],
            "examples": [
                {
                    "prediction_id": "0c5c3d0e9f6a4b1d8e2f7a9b3c4d5e6f-000",
                    "prdtypecode": 2583,
                    "source": "moderation",
                }
            ],
        },
    )

    prediction_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=36,
        pattern=NO_NUL,
        description="`prediction_id` of a /predict answer.",
    )
    productid: Id | None = Field(
        default=None, description="Instead of prediction_id: the latest logged prediction of this product."
    )
    prdtypecode: json_integer() = Field(  # type: ignore[valid-type]
        description="The true product type code (one of the 27).",
        json_schema_extra={"enum": _known_codes()},
    )
    source: str = Field(
        default="unspecified",
        min_length=1,
        max_length=64,
        pattern=NO_NUL,
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
    model_config = STRICT_REQUEST

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
