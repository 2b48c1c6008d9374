"""CLI commands of the training area: ``train``, ``promote``, ``rollback``, ``models``.

Registered on the root app by ``register(app)``; heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rakuten_mlops.settings import get_settings


def _consoles():
    from rakuten_mlops.cli import console, print_backends

    return console, print_backends


def train(
    model: Annotated[str, typer.Option(help="Classifier: sgd (default, fastest) or logreg.")] = "sgd",
    search: Annotated[
        bool, typer.Option("--search", help="Small hyperparameter search on a validation split.")
    ] = False,
    promote: Annotated[
        bool, typer.Option("--promote", help="Run the promotion gate on the new version.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option(help="Write the decision JSON here (read by the Argo workflow).")
    ] = None,
) -> None:
    """Train on the loaded data, evaluate, log to MLflow, register; --promote runs the gate.

    Exit 0 also when the gate refuses the new version (the decision is printed)."""
    from rakuten_mlops.model.pipeline import MODEL_KINDS

    if model not in MODEL_KINDS:
        raise typer.BadParameter(f"choose one of {', '.join(MODEL_KINDS)}", param_hint="--model")
    console, print_backends = _consoles()
    print_backends()
    from rakuten_mlops.training.train import run_training

    result = run_training(
        get_settings(),
        model=model,
        search=search,
        promote=promote,
        progress=lambda line: console.print(f"[dim]... {line}[/dim]", highlight=False),
    )
    console.print(result.describe(), markup=False)
    if output is not None:
        from rakuten_mlops.cli import write_result_file

        write_result_file(output, json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        console.print(f"decision written to {output}", markup=False)


def promote(
    version: Annotated[str, typer.Argument(help="Registered version to promote.")],
    force: Annotated[
        bool, typer.Option("--force", help="Skip the gate (a human override; needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required with --force, recorded).")] = None,
) -> None:
    """Run the promotion gate for VERSION (or force it). Exit 0 promoted, 3 refused."""
    console, print_backends = _consoles()
    print_backends()
    from rakuten_mlops.training.registry import promote as run_gate

    decision = run_gate(get_settings(), version, force=force, reason=reason, actor="cli")
    console.print(decision.describe(), markup=False)
    if not decision.promoted:
        raise typer.Exit(3)


def rollback(
    to: Annotated[
        str | None, typer.Option(help="Version to restore (default: the previous production one).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded in model_events).")] = "manual rollback",
) -> None:
    """Move the production alias back to the previous production version (from the history)."""
    console, print_backends = _consoles()
    print_backends()
    from rakuten_mlops.training.registry import rollback as run_rollback

    result = run_rollback(get_settings(), to=to, reason=reason, actor="cli")
    console.print(result.describe(), markup=False)


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the registered versions with aliases, scores, lineage, gate decisions and dates."""
    console, print_backends = _consoles()
    print_backends(quiet=as_json)
    from rakuten_mlops.training.registry import list_versions

    settings = get_settings()
    versions = list_versions(settings)
    if as_json:
        sys.stdout.write(json.dumps([v.to_dict() for v in versions], indent=2) + "\n")
        return
    if not versions:
        console.print(
            f"no versions of {settings.registered_model} yet: run `rakuten-mlops train`", markup=False
        )
        return
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"{settings.registered_model}: {len(versions)} version(s) (F1 on the test set of their training; dates UTC)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )
    for column, justify in COLUMNS:
        table.add_column(column, justify=justify, no_wrap=column != "batches", min_width=len(column))
    for v in versions:
        table.add_row(
            v.version,
            ",".join(v.aliases) or "-",
            _score(v.tag("f1_weighted")),
            _score(v.tag("f1_macro")),
            _score(v.tag("accuracy")),
            v.tag("train_rows") or "-",
            _ranges(v.tag("batch_ids")),
            v.tag("gate_decision") or "-",
            v.created_at[5:16].replace("T", " "),
        )
    console.print(table)


COLUMNS = (  # short headers: the table fits an 80-column terminal
    ("ver", "right"),
    ("alias", "left"),
    ("F1 w", "right"),
    ("F1 mac", "right"),
    ("acc", "right"),
    ("rows", "right"),
    ("batches", "left"),
    ("gate", "left"),
    ("created    ", "left"),
)


def _score(value: str) -> str:
    try:
        return f"{float(value):.4f}"
    except ValueError:
        return "-"


def _ranges(batch_ids: str) -> str:
    """'1,2,3,5' -> '1-3,5': the batch list stays short as loads accumulate."""
    try:
        ids = sorted(int(b) for b in batch_ids.split(",") if b)
    except ValueError:
        return batch_ids or "-"
    parts: list[str] = []
    for i in ids:
        if parts and parts[-1][1] == i - 1:
            parts[-1][1] = i
        else:
            parts.append([i, i])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in parts) or "-"


def register(app: typer.Typer) -> None:
    """Add the top-level commands train, promote, rollback and models to the root app."""
    app.command("train")(train)
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("models")(models)
