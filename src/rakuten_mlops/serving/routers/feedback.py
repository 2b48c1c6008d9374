"""``POST /feedback``: true classes of logged predictions, behind the feedback or the admin token
(mounted when either is set)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from rakuten_mlops.monitoring.feedback import LabelIn, store_labels
from rakuten_mlops.serving.deps import Feedback, State
from rakuten_mlops.serving.errors import BODY_ERRORS, error_responses
from rakuten_mlops.serving.schemas import FeedbackIn, FeedbackItemOut, FeedbackOut

router = APIRouter(tags=["feedback"], dependencies=[Feedback])


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    responses=error_responses(
        {
            **BODY_ERRORS,
            401: "Missing or wrong bearer token",
            404: "An item names an unknown prediction (every one is listed); nothing stored",
            422: "Invalid item (unknown prdtypecode, more than 1,000 items...); nothing stored",
            503: "The data database is unavailable; nothing stored (Retry-After)",
        }
    ),
)
async def feedback(body: FeedbackIn, state: State) -> FeedbackOut:
    """Store true classes against logged predictions, all or none.

    A prediction is named by `prediction_id`, or by `productid` (its latest logged prediction).
    The same label again (same code, same source) is `unchanged`; a different code is stored
    and wins (the newest label of a prediction is its label). Predictions reach the log within
    about a second of being served: a label sent sooner may get 404 and can be sent again.
    """
    labels = [LabelIn(i.prdtypecode, i.source, i.prediction_id, i.productid) for i in body.items]
    result = await asyncio.to_thread(store_labels, state.settings.database_url, labels)
    return FeedbackOut(
        stored=result.stored,
        unchanged=result.unchanged,
        replaced=result.replaced,
        items=[FeedbackItemOut(**vars(item)) for item in result.items],
    )
