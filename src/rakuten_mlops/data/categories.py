"""The 27 product type codes of the Rakuten France challenge, with names and real class counts."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Category:
    code: int
    name_fr: str
    name_en: str
    train_count: int


@functools.cache
def load_categories() -> dict[int, Category]:
    """Code -> category, in the order of the official list (shipped with the package)."""
    text = resources.files("rakuten_mlops.data").joinpath("categories.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines())
    return {
        int(r["prdtypecode"]): Category(
            int(r["prdtypecode"]), r["name_fr"], r["name_en"], int(r["train_count"])
        )
        for r in rows
    }


def category_name(code: int) -> str:
    """Human-readable (French) name of a code; the code itself when unknown."""
    cat = load_categories().get(int(code))
    return cat.name_fr if cat else str(code)


def class_prior() -> dict[int, float]:
    """Share of each class in the full official training set (84,916 rows)."""
    cats = load_categories()
    total = sum(c.train_count for c in cats.values())
    return {code: c.train_count / total for code, c in cats.items()}
