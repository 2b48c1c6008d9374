"""Label feedback: true classes received for logged predictions, and the realized F1 they give.

``POST /feedback`` calls :func:`store_labels`. A label names its prediction by
``prediction_id``, or by ``productid`` (then the latest logged prediction of that product: the
newest ``created_at``, the highest ``id`` among predictions of the same instant). Every item is
checked before any is stored, in one transaction: a batch is stored whole or not at all.

Labels are only added to ``prediction_labels``. A prediction's label is its newest revision;
a label equal to it (same code, same source) adds nothing, a different one adds a revision and
wins. Concurrent writers of the same prediction race on the unique (prediction_id, revision):
the loser's transaction is retried.

:func:`realized_f1` scores each model version on the labelled predictions of a window (the
window is the predictions' ``created_at``, not the time the labels arrived);
:func:`evaluate_feedback` (``rakuten-mlops evaluate-feedback``) stores it in
``feedback_evaluations``, which the API's ``rakuten_model_live_f1`` gauge and ``decide`` read
beside the ``live_evaluations`` of labelled loads (:func:`latest_realized_f1`: the newest wins).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from rakuten_mlops.settings import Settings

RETRIES_ON_CONFLICT = 5


@dataclass(frozen=True)
class LabelIn:
    """One label as received: exactly one of ``prediction_id`` and ``productid`` is set."""

    prdtypecode: int
    source: str
    prediction_id: str | None = None
    productid: int | None = None


@dataclass
class StoredLabel:
    index: int
    prediction_id: str
    prdtypecode: int
    status: str  # stored | unchanged
    model_version: str
    previous_prdtypecode: int | None = None


@dataclass
class FeedbackResult:
    items: list[StoredLabel]

    @property
    def stored(self) -> int:
        return sum(item.status == "stored" for item in self.items)

    @property
    def unchanged(self) -> int:
        return sum(item.status == "unchanged" for item in self.items)

    @property
    def replaced(self) -> int:
        return sum(
            item.status == "stored"
            and item.previous_prdtypecode is not None
            and item.previous_prdtypecode != item.prdtypecode
            for item in self.items
        )


def store_labels(database_url: str, labels: list[LabelIn]) -> FeedbackResult:
    """Store ``labels`` against their logged predictions (all or nothing).

    Raises UnknownPredictionError naming every unknown prediction, DatabaseError when the
    database cannot be reached (nothing stored either way).
    """
    from sqlalchemy.exc import DBAPIError, IntegrityError

    from rakuten_mlops.db import session_scope, upgrade
    from rakuten_mlops.db.engine import DatabaseError
    from rakuten_mlops.settings import redact_url

    upgrade(database_url)
    for attempt in range(RETRIES_ON_CONFLICT):
        try:
            with session_scope(database_url) as session:
                return _store(session, labels)
        except IntegrityError as exc:  # another request wrote a revision of the same prediction meanwhile
            if attempt == RETRIES_ON_CONFLICT - 1:
                raise DatabaseError(
                    "labels of the same predictions kept being written concurrently; nothing was stored, "
                    "send them again"
                ) from exc
        except DBAPIError as exc:
            first = (str(exc.orig) or exc.__class__.__name__).strip().splitlines()[0]
            raise DatabaseError(
                f"cannot store labels in the data database {redact_url(database_url)} ({first}); "
                "nothing was stored"
            ) from exc
    raise AssertionError("unreachable")


def _store(session, labels: list[LabelIn]) -> FeedbackResult:
    from rakuten_mlops.db.models import PredictionLabel
    from rakuten_mlops.errors import UnknownPredictionError

    by_id = _predictions_by_id(session, {x.prediction_id for x in labels if x.prediction_id})
    by_product = _latest_by_productid(session, {x.productid for x in labels if x.productid is not None})
    problems, resolved = [], []
    for index, label in enumerate(labels):
        if label.prediction_id is not None:
            found = by_id.get(label.prediction_id)
            what = ("prediction_id", f"unknown prediction_id {label.prediction_id!r}")
        else:
            found = by_product.get(label.productid)
            what = ("productid", f"no logged prediction of productid {label.productid}")
        if found is None:
            problems.append({"field": f"items[{index}].{what[0]}", "message": what[1], "type": "unknown"})
        resolved.append(found)
    if problems:
        raise UnknownPredictionError(problems)

    latest = _latest_labels(session, {p[0] for p in resolved})
    now = datetime.now(UTC)
    items = []
    for index, (label, (prediction_id, version, created_at)) in enumerate(zip(labels, resolved, strict=True)):
        current = latest.get(prediction_id)
        if current is not None and (current["prdtypecode"], current["source"]) == (
            label.prdtypecode,
            label.source,
        ):
            items.append(StoredLabel(index, prediction_id, label.prdtypecode, "unchanged", version))
            continue
        revision = current["revision"] + 1 if current else 1
        session.add(
            PredictionLabel(
                prediction_id=prediction_id,
                revision=revision,
                prdtypecode=label.prdtypecode,
                source=label.source,
                received_at=now,
                model_version=version,
                prediction_created_at=created_at,
            )
        )
        items.append(
            StoredLabel(
                index, prediction_id, label.prdtypecode, "stored", version,
                current["prdtypecode"] if current else None,
            )
        )  # fmt: skip
        latest[prediction_id] = {
            "revision": revision,
            "prdtypecode": label.prdtypecode,
            "source": label.source,
        }
    session.flush()
    return FeedbackResult(items)


def _predictions_by_id(session, ids: set[str]) -> dict[str, tuple]:
    from sqlalchemy import select

    from rakuten_mlops.db.models import Prediction as P

    if not ids:
        return {}
    query = select(P.prediction_id, P.model_version, P.created_at).where(P.prediction_id.in_(sorted(ids)))
    return {row[0]: tuple(row) for row in session.execute(query)}


def _latest_by_productid(session, productids: set[int]) -> dict[int, tuple]:
    from sqlalchemy import func, select

    from rakuten_mlops.db.models import Prediction as P

    if not productids:
        return {}
    rank = func.row_number().over(partition_by=P.productid, order_by=(P.created_at.desc(), P.id.desc()))
    ranked = (
        select(P.productid, P.prediction_id, P.model_version, P.created_at, rank.label("rank"))
        .where(P.productid.in_(sorted(productids)))
        .subquery()
    )
    query = select(ranked.c.productid, ranked.c.prediction_id, ranked.c.model_version, ranked.c.created_at)
    return {row[0]: tuple(row[1:]) for row in session.execute(query.where(ranked.c.rank == 1))}


def _latest_labels(session, prediction_ids: set[str]) -> dict[str, dict]:
    from sqlalchemy import select

    from rakuten_mlops.db.models import PredictionLabel as L

    query = (
        select(L.prediction_id, L.revision, L.prdtypecode, L.source)
        .where(L.prediction_id.in_(sorted(prediction_ids)))
        .order_by(L.prediction_id, L.revision)
    )
    latest: dict[str, dict] = {}
    for pid, revision, code, source in session.execute(query):
        latest[pid] = {"revision": revision, "prdtypecode": code, "source": source}
    return latest


# --- realized F1 ---------------------------------------------------------------------------


@dataclass
class RealizedF1:
    """Accuracy of one model version on the feedback labels of its predictions in a window."""

    model_version: str
    window_start: datetime
    window_end: datetime
    n: int
    f1_weighted: float
    f1_macro: float
    accuracy: float
    evaluation_id: int | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labelled_predictions(
    database_url: str, start: datetime, end: datetime, model_version: str | None = None
) -> pd.DataFrame:
    """Predictions made in ``[start, end)`` that have a feedback label: one row each, with the
    predicted code, the label (newest revision) and the model version."""
    from sqlalchemy import and_, func, select

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Prediction as P
    from rakuten_mlops.db.models import PredictionLabel as L

    upgrade(database_url)
    in_window = [L.prediction_created_at >= start, L.prediction_created_at < end]
    if model_version is not None:
        in_window.append(L.model_version == str(model_version))
    newest = (
        select(L.prediction_id, func.max(L.revision).label("revision"))
        .where(*in_window)
        .group_by(L.prediction_id)
        .subquery()
    )
    query = (
        select(
            L.prediction_id, P.model_version, P.prdtypecode.label("predicted"), L.prdtypecode.label("label")
        )
        .join(newest, and_(L.prediction_id == newest.c.prediction_id, L.revision == newest.c.revision))
        .join(P, P.prediction_id == L.prediction_id)
        .where(P.created_at >= start, P.created_at < end)  # lets Postgres read only the window's partitions
    )
    columns = ["prediction_id", "model_version", "predicted", "label"]
    with engine_for(database_url).connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=columns)


def realized_f1(
    settings: Settings, start: datetime, end: datetime, model_version: str | None = None
) -> list[RealizedF1]:
    """Weighted and macro F1 and accuracy per model version on the feedback labels of the
    predictions made in ``[start, end)`` (versions without labels are absent)."""
    from sklearn.metrics import accuracy_score, f1_score

    frame = labelled_predictions(settings.database_url, start, end, model_version)
    results = []
    for version, rows in frame.groupby("model_version", sort=True):
        truth, predicted = rows["label"].to_numpy(), rows["predicted"].to_numpy()
        results.append(
            RealizedF1(
                model_version=str(version),
                window_start=start,
                window_end=end,
                n=len(rows),
                f1_weighted=float(f1_score(truth, predicted, average="weighted", zero_division=0)),
                f1_macro=float(f1_score(truth, predicted, average="macro", zero_division=0)),
                accuracy=float(accuracy_score(truth, predicted)),
            )
        )
    return results


def realized_f1_weighted(
    settings: Settings, start: datetime, end: datetime, model_version: str
) -> float | None:
    """Realized weighted F1 of ``model_version`` on the feedback labels of its predictions made in
    ``[start, end)``; None when none of them has a label."""
    found = realized_f1(settings, start, end, model_version)
    return found[0].f1_weighted if found else None


@dataclass
class FeedbackEvaluationRun:
    window: str
    window_start: datetime
    window_end: datetime
    min_labels: int
    versions: list[RealizedF1] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "min_labels": self.min_labels,
            "labels": sum(v.n for v in self.versions),
            "versions": [
                {
                    **v.to_dict(),
                    "window_start": v.window_start.isoformat(),
                    "window_end": v.window_end.isoformat(),
                }
                for v in self.versions
            ],
        }


def evaluate_feedback(
    settings: Settings, window: str, *, min_labels: int = 100, now: datetime | None = None
) -> FeedbackEvaluationRun:
    """Realized F1 of every model version over the last ``window`` of predictions, stored in
    ``feedback_evaluations`` for versions with at least ``min_labels`` labels."""
    from rakuten_mlops.db import session_scope
    from rakuten_mlops.db.models import FeedbackEvaluation
    from rakuten_mlops.monitoring.drift import parse_window

    end = now or datetime.now(UTC)
    start = end - parse_window(window)
    run = FeedbackEvaluationRun(window, start, end, min_labels, realized_f1(settings, start, end))
    with session_scope(settings.database_url) as session:
        for result in run.versions:
            if result.n < min_labels:
                result.note = f"{result.n} labels < {min_labels} (--min-labels): not stored"
                continue
            row = FeedbackEvaluation(
                model_version=result.model_version,
                window_start=start,
                window_end=end,
                n_rows=result.n,
                f1_weighted=result.f1_weighted,
                f1_macro=result.f1_macro,
                accuracy=result.accuracy,
            )
            session.add(row)
            session.flush()
            result.evaluation_id = row.id
    return run


# --- the newest realized F1, from a labelled load or from feedback -------------------------


@dataclass
class LatestRealized:
    model_version: str
    f1_weighted: float
    n_rows: int
    created_at: datetime
    source: str  # labelled_batch | feedback
    batch_id: int | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None

    def describe(self) -> str:
        if self.source == "labelled_batch":
            return f"batch {self.batch_id}"
        return (
            f"feedback labels of predictions from {self.window_start:%Y-%m-%d %H:%M} "
            f"to {self.window_end:%Y-%m-%d %H:%M}"
        )


def latest_realized(session, model_version: str | None = None) -> dict[str, LatestRealized]:
    """Per model version, its newest measured F1: a ``live_evaluations`` row (labelled load) or a
    ``feedback_evaluations`` row, whichever was written last."""
    from sqlalchemy import func, select

    from rakuten_mlops.db.models import FeedbackEvaluation as F
    from rakuten_mlops.db.models import LiveEvaluation as E

    found: dict[str, LatestRealized] = {}
    for table, source in ((E, "labelled_batch"), (F, "feedback")):
        newest = select(table.model_version, func.max(table.id).label("id")).group_by(table.model_version)
        if model_version is not None:
            newest = newest.where(table.model_version == str(model_version))
        newest = newest.subquery()
        for row in session.scalars(select(table).join(newest, table.id == newest.c.id)):
            candidate = LatestRealized(
                row.model_version, row.f1_weighted, row.n_rows, row.created_at, source,
                getattr(row, "batch_id", None), getattr(row, "window_start", None), getattr(row, "window_end", None),
            )  # fmt: skip
            known = found.get(row.model_version)
            if known is None or _aware(candidate.created_at) > _aware(known.created_at):
                found[row.model_version] = candidate
    return found


def latest_realized_f1(settings: Settings, model_version: str) -> LatestRealized | None:
    """The newest measured F1 of ``model_version`` (labelled load or feedback), or None."""
    from rakuten_mlops.db import session_scope, upgrade

    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        return latest_realized(session, model_version).get(str(model_version))


def _aware(moment: datetime) -> datetime:
    """SQLite gives naive datetimes back: they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
