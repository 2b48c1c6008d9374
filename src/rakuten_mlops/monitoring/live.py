"""Live accuracy: the production model scored on a newly loaded labelled batch.

The loader calls :func:`evaluate_after_load` after every successful batch; the result is a
``live_evaluations`` row (exported by the API as ``rakuten_model_live_f1{version}``) that
``decide`` compares with ``RAKUTEN_RETRAIN_F1``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from rakuten_mlops.settings import Settings


@dataclass
class LiveEvaluationResult:
    model_version: str
    batch_id: int
    n_rows: int
    f1_weighted: float
    accuracy: float
    evaluation_id: int

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"live accuracy of production model version {self.model_version} on batch {self.batch_id} "
            f"({self.n_rows:,} labelled rows): weighted F1 {self.f1_weighted:.4f}, accuracy {self.accuracy:.4f}"
        )


def batch_products(settings: Settings, batch_id: int) -> pd.DataFrame:
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Product

    upgrade(settings.database_url)
    query = select(Product.designation, Product.description, Product.prdtypecode).where(
        Product.batch_id == batch_id
    )
    with engine_for(settings.database_url).connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=["designation", "description", "prdtypecode"])


def evaluate_live(settings: Settings, batch_id: int) -> LiveEvaluationResult | None:
    """Score the production model on the labelled products of ``batch_id`` and store the result.

    None when there is no production model or the batch has no rows. Raises
    RegistryUnavailableError when MLflow cannot be reached.
    """
    from sklearn.metrics import accuracy_score, f1_score

    from rakuten_mlops.db import session_scope
    from rakuten_mlops.db.models import LiveEvaluation
    from rakuten_mlops.monitoring.reference import load_production_model

    products = batch_products(settings, batch_id)
    if products.empty:
        return None
    model = load_production_model(settings)
    if model is None:
        return None
    predicted = model.pipeline.predict(products[["designation", "description"]])
    truth = products["prdtypecode"].to_numpy()
    f1 = float(f1_score(truth, predicted, average="weighted", zero_division=0))
    accuracy = float(accuracy_score(truth, predicted))
    with session_scope(settings.database_url) as session:
        row = LiveEvaluation(
            model_version=model.version,
            batch_id=batch_id,
            n_rows=len(products),
            f1_weighted=f1,
            accuracy=accuracy,
        )
        session.add(row)
        session.flush()
        row_id = row.id
    return LiveEvaluationResult(model.version, batch_id, len(products), f1, accuracy, row_id)


def evaluate_after_load(settings: Settings, batch_id: int, console) -> LiveEvaluationResult | None:
    """What ``data load`` runs after a successful batch: never fails the load, says what happened."""
    from rakuten_mlops.errors import PlatformError

    try:
        result = evaluate_live(settings, batch_id)
    except PlatformError as exc:  # registry down: the data is loaded, the evaluation can wait
        console.print(f"[yellow]warning: live accuracy not measured: {exc}[/yellow]")
        return None
    except Exception as exc:  # a model that cannot be loaded must not undo a good load either
        console.print(
            f"[yellow]warning: live accuracy not measured ({exc.__class__.__name__}: {exc})[/yellow]"
        )
        return None
    if result is None:
        console.print("no production model yet: live accuracy not measured")
    else:
        console.print(result.describe())
    return result
