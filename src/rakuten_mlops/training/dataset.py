"""The training and test sets, read from the ``products`` table (the fixed ``split`` column), with
lineage: load batch ids, row counts and content digests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd

from rakuten_mlops.errors import NotEnoughDataError
from rakuten_mlops.settings import Settings

COLUMNS = ["productid", "designation", "description", "prdtypecode", "split", "batch_id"]
INPUT_COLUMNS = ["designation", "description"]


def frame_digest(frame: pd.DataFrame) -> str:
    """Content digest of a split (order-independent): same rows and labels, same digest."""
    if frame.empty:
        return hashlib.sha256(b"").hexdigest()[:16]
    ordered = frame.sort_values("productid")[["productid", "designation", "description", "prdtypecode"]]
    hashed = pd.util.hash_pandas_object(ordered, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


@dataclass
class LabelledSplit:
    """One split: the model input, the labels and its digest."""

    frame: pd.DataFrame
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = frame_digest(self.frame)

    @property
    def X(self) -> pd.DataFrame:  # noqa: N802 - the usual name of a model input
        return self.frame[INPUT_COLUMNS]

    @property
    def y(self):
        return self.frame["prdtypecode"].to_numpy()

    def __len__(self) -> int:
        return len(self.frame)


@dataclass
class TrainingData:
    train: LabelledSplit
    test: LabelledSplit
    batch_ids: list[int] = field(default_factory=list)

    @property
    def dataset_digest(self) -> str:
        return hashlib.sha256(f"{self.train.digest}:{self.test.digest}".encode()).hexdigest()[:16]

    def class_counts(self) -> dict[int, int]:
        return {
            int(k): int(v) for k, v in self.train.frame["prdtypecode"].value_counts().sort_index().items()
        }

    def lineage(self) -> dict[str, str]:
        """The lineage tags of a model version (docs/architecture.md)."""
        return {
            "train_rows": str(len(self.train)),
            "test_rows": str(len(self.test)),
            "batch_ids": ",".join(str(b) for b in self.batch_ids),
            "dataset_digest": self.dataset_digest,
            "test_digest": self.test.digest,
        }


def read_products(settings: Settings, split: str | None = None) -> pd.DataFrame:
    """All loaded products (or one split), migrating the schema first like every job does."""
    from sqlalchemy import select

    from rakuten_mlops.db import engine_for, upgrade
    from rakuten_mlops.db.models import Product

    upgrade(settings.database_url)
    query = select(*(getattr(Product, c) for c in COLUMNS))
    if split is not None:
        query = query.where(Product.split == split)
    with engine_for(settings.database_url).connect() as conn:
        frame = pd.read_sql(query, conn)
    frame["designation"] = frame["designation"].fillna("").astype(str)
    frame["description"] = frame["description"].fillna("").astype(str)
    frame["prdtypecode"] = frame["prdtypecode"].astype("int64")
    return frame


def load_training_data(settings: Settings) -> TrainingData:
    """Train and test splits of everything loaded so far, checked to be trainable."""
    frame = read_products(settings)
    data = TrainingData(
        train=LabelledSplit(frame[frame["split"] == "train"].reset_index(drop=True)),
        test=LabelledSplit(frame[frame["split"] == "test"].reset_index(drop=True)),
        batch_ids=sorted(int(b) for b in frame["batch_id"].unique()),
    )
    check_trainable(data, settings.min_rows_per_class)
    return data


def load_test_set(settings: Settings) -> LabelledSplit:
    """The current test split (the promotion gate scores every version on it)."""
    frame = read_products(settings, split="test").reset_index(drop=True)
    if frame.empty:
        raise NotEnoughDataError(
            "the products table has no test rows: load data first (rakuten-mlops data load)"
        )
    return LabelledSplit(frame)


def check_trainable(data: TrainingData, min_rows_per_class: int) -> None:
    """Raise :class:`NotEnoughDataError`, naming the classes, before any training starts."""
    hint = "load more data (rakuten-mlops data load) or lower RAKUTEN_MIN_ROWS_PER_CLASS"
    if len(data.train) == 0:
        raise NotEnoughDataError(
            "the products table has no training rows: load data first (rakuten-mlops data load)"
        )
    counts = data.class_counts()
    for code in data.test.frame["prdtypecode"].unique():  # a class seen only in the test split has 0
        counts.setdefault(int(code), 0)
    if len(counts) < 2:
        raise NotEnoughDataError(f"the training rows hold {len(counts)} class; at least 2 are needed: {hint}")
    short = {code: n for code, n in counts.items() if n < min_rows_per_class}
    if short:
        listed = ", ".join(f"{code} ({n})" for code, n in sorted(short.items(), key=lambda kv: kv[1]))
        raise NotEnoughDataError(
            f"{len(short)} class(es) have fewer than {min_rows_per_class} training rows: {listed}; {hint}"
        )
    if len(data.test) == 0:
        raise NotEnoughDataError("the products table has no test rows to evaluate on: load more data")
