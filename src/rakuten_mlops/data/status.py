"""What is loaded: share of each source, rows per class, batches, and the backlog for retraining."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select

from rakuten_mlops.data.categories import category_name
from rakuten_mlops.db import engine_for, upgrade
from rakuten_mlops.db.models import LoadBatch, Product
from rakuten_mlops.settings import Settings


@dataclass
class DataStatus:
    total_products: int
    train_rows: int
    test_rows: int
    rows_per_class: dict[int, int]
    sources: list[dict[str, Any]]
    batches: list[dict[str, Any]]
    production_version: str | None
    production_batch_ids: list[int] = field(default_factory=list)
    backlog_rows: int = 0
    registry_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows_per_class"] = {str(k): v for k, v in self.rows_per_class.items()}
        return out


def production_lineage(settings: Settings) -> tuple[str | None, list[int], str | None]:
    """(production version, load batch ids it was trained on, error) from the MLflow registry."""
    from rakuten_mlops import registry

    try:
        mv = registry.production_lineage(settings)
    except Exception as exc:  # registry down: status still reports the data
        return None, [], str(exc).splitlines()[0][:200]
    return (mv.version, mv.batch_ids, None) if mv else (None, [], None)


def backlog_since(settings: Settings, batch_ids: list[int]) -> int:
    """Labelled rows loaded after the newest batch a model was trained on (all rows if none)."""
    upgrade(settings.database_url)
    newest = max(batch_ids) if batch_ids else 0
    with engine_for(settings.database_url).connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(Product).where(Product.batch_id > newest)
            ).scalar_one()
        )


def data_status(settings: Settings, *, with_registry: bool = True) -> DataStatus:
    upgrade(settings.database_url)
    with engine_for(settings.database_url).connect() as conn:
        per_class = dict(
            conn.execute(select(Product.prdtypecode, func.count()).group_by(Product.prdtypecode)).all()
        )
        per_split = dict(conn.execute(select(Product.split, func.count()).group_by(Product.split)).all())
        batches = conn.execute(select(LoadBatch).order_by(LoadBatch.id)).mappings().all()
    sources: dict[str, dict[str, Any]] = {}
    for b in batches:
        if b["status"] != "succeeded":
            continue
        s = sources.setdefault(b["source_digest"], {"source": b["source"], "loaded": 0, "batches": 0})
        s["loaded"] = max(s["loaded"], b["row_end"])
        s["total"] = b["source_rows"]
        s["loaded_share"] = s["loaded"] / s["total"] if s["total"] else None
        s["batches"] += 1
    version, ids, error = production_lineage(settings) if with_registry else (None, [], None)
    return DataStatus(
        total_products=sum(per_class.values()),
        train_rows=int(per_split.get("train", 0)),
        test_rows=int(per_split.get("test", 0)),
        rows_per_class={int(k): int(v) for k, v in sorted(per_class.items())},
        sources=list(sources.values()),
        batches=[
            {
                k: b[k]
                for k in (
                    "id",
                    "status",
                    "row_start",
                    "row_end",
                    "row_count",
                    "started_at",
                    "finished_at",
                    "message",
                )
            }
            for b in batches
        ],
        production_version=version,
        production_batch_ids=ids,
        backlog_rows=backlog_since(settings, ids),
        registry_error=error,
    )


def render_status(status: DataStatus, console) -> None:
    from rich.table import Table

    console.print(
        f"[bold]{status.total_products:,}[/bold] products loaded "
        f"({status.train_rows:,} train / {status.test_rows:,} test, split fixed by productid)"
    )
    for s in status.sources:
        share = f" = {s['loaded'] / s['total']:.0%}" if s.get("total") else ""
        console.print(f"  source {s['source']}: {s['loaded']:,} rows in {s['batches']} batch(es){share}")
    if status.production_version:
        console.print(
            f"production model: version {status.production_version}, trained on batches "
            f"{status.production_batch_ids or '?'}; backlog since then: [bold]{status.backlog_rows:,}[/bold] rows"
        )
    else:
        console.print(f"no production model yet; backlog: [bold]{status.backlog_rows:,}[/bold] rows")
    if status.registry_error:
        console.print(f"[yellow]registry not reachable: {status.registry_error}[/yellow]")
    table = Table(title="rows per class", show_lines=False)
    table.add_column("code", justify="right")
    table.add_column("category")
    table.add_column("rows", justify="right")
    for code, n in status.rows_per_class.items():
        table.add_row(str(code), category_name(code), f"{n:,}")
    console.print(table)
    batches = Table(title="load batches")
    for col in ("id", "status", "rows", "range", "finished"):
        batches.add_column(col)
    for b in status.batches[-10:]:
        batches.add_row(
            str(b["id"]),
            b["status"],
            f"{b['row_count']:,}",
            f"{b['row_start']}-{b['row_end']}",
            str(b["finished_at"] or "")[:19],
        )
    console.print(batches)
