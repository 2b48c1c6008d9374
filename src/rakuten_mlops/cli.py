"""`rakuten-mlops`: the one command line that runs every job of the platform.

Heavy libraries (pandas, scikit-learn, MLflow) are imported inside the commands so that
`--help` and small commands stay fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rakuten_mlops import __version__
from rakuten_mlops.errors import PlatformError
from rakuten_mlops.settings import get_settings

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="rakuten-mlops",
    help="Rakuten France product classification: data, training, registry, serving, drift.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Data database (migrations).", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: generate, upload, load incrementally, status.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(data_app, name="data")


def print_backends(quiet: bool = False) -> None:
    """Every command says which backends it uses (to stderr when the output is JSON)."""
    (err_console if quiet else console).print(f"[dim]{get_settings().backends_line()}[/dim]")


def write_result_file(path: Path, text: str) -> None:
    """Write a command's ``--output`` file whole or not at all (a temporary name beside it, then a
    rename): a workflow step reading it after a crash never sees half a JSON document."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Rakuten France product classification: data, training, registry, serving, drift."""


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (jobs also do this themselves)."""
    from rakuten_mlops.db import upgrade

    settings = get_settings()
    print_backends()
    upgrade(settings.database_url)
    console.print("database schema is up to date")


@data_app.command("generate")
def data_generate(
    out: Annotated[
        Path, typer.Option(help="Folder to write X_train_update.csv and Y_train_CVw08PX.csv into.")
    ],
    rows: Annotated[int, typer.Option(min=1, help="Number of products.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 42,
    drift: Annotated[
        str | None, typer.Option(help="Shift the data: class-prior, vocabulary, length or language.")
    ] = None,
    drift_strength: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="How strong the shift is (0-1).")
    ] = 0.5,
    first_productid: Annotated[
        int | None, typer.Option(help="First productid (default: derived from the seed, no overlap).")
    ] = None,
) -> None:
    """Write a synthetic dataset in the official Rakuten CSV layout."""
    from rakuten_mlops.data.generator import DRIFT_KINDS, generate_to_dir

    if drift is not None and drift not in DRIFT_KINDS:
        raise typer.BadParameter(f"--drift must be one of {', '.join(DRIFT_KINDS)}", param_hint="--drift")
    result = generate_to_dir(
        out, rows=rows, seed=seed, drift=drift, drift_strength=drift_strength, first_productid=first_productid
    )
    console.print(
        f"generated {result.rows:,} products in {result.seconds:.2f}s ({result.rows / result.seconds:,.0f} rows/s)"
        f"{f', drift={drift} strength={drift_strength}' if drift else ''} -> {out}"
    )


@data_app.command("load")
def data_load(
    source: Annotated[
        str,
        typer.Option(
            help="Folder with the official CSV files (X_*.csv and Y_*.csv), "
            "or an S3 landing zone s3://BUCKET/PREFIX (AWS_* environment)."
        ),
    ],
    initial_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of the source loaded by the first run.")
    ] = 0.4,
    batch_fraction: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Share of the source added by each later run.")
    ] = None,
    batch_rows: Annotated[int | None, typer.Option(min=1, help="Rows added by each later run.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fixed loading order.")] = 42,
    all_: Annotated[bool, typer.Option("--all", help="Load everything that is left in one batch.")] = False,
) -> None:
    """Add the next slice of a source to the products table (one transaction, audited)."""
    from rakuten_mlops.data.loader import LoadPlan, load_next_batch
    from rakuten_mlops.monitoring.live import evaluate_after_load

    settings = get_settings()
    print_backends()
    if batch_fraction is not None and batch_rows is not None:
        raise typer.BadParameter("give --batch-fraction or --batch-rows, not both")
    plan = LoadPlan(
        initial_fraction=initial_fraction,
        batch_fraction=0.03 if batch_fraction is None and batch_rows is None else batch_fraction,
        batch_rows=batch_rows,
        seed=seed,
        load_all=all_,
    )
    if source.startswith("s3://"):
        from rakuten_mlops.data.landing import load_from_landing

        def loaded(result) -> None:  # said and scored as each batch commits: a later bad drop keeps it
            console.print(f"{result.source}: {result.describe()}")
            evaluate_after_load(settings, result.batch_id, console)

        for line in load_from_landing(settings, source, plan, on_loaded=loaded).summary():
            console.print(line)
        return
    result = load_next_batch(settings, Path(source), plan)
    console.print(result.describe())
    if result.batch_id is not None:  # score the production model on the new labels
        evaluate_after_load(settings, result.batch_id, console)


@data_app.command("upload")
def data_upload(
    folder: Annotated[Path, typer.Argument(help="Folder with the official CSV files (X_*.csv and Y_*.csv).")],
    to: Annotated[
        str, typer.Option("--to", help="Landing zone drop: s3://BUCKET/PREFIX (AWS_* environment).")
    ],
) -> None:
    """Validate a folder of official files and put it in the S3 landing zone as one drop."""
    from rakuten_mlops.data.landing import upload_drop

    print_backends()
    console.print(upload_drop(folder, to).describe())


@data_app.command("status")
def data_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Loaded share, rows per class, batches and the backlog since the production model."""
    from rakuten_mlops.data.status import data_status as compute_status
    from rakuten_mlops.data.status import render_status

    settings = get_settings()
    print_backends(quiet=as_json)
    status = compute_status(settings)
    if as_json:
        sys.stdout.write(json.dumps(status.to_dict(), indent=2, default=str) + "\n")
    else:
        render_status(status, console)


@app.command("retention")
def retention(
    days: Annotated[
        int | None,
        typer.Option(
            min=1, help="Whole days of prediction log to keep (default: RAKUTEN_PREDICTION_RETENTION_DAYS)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the machine-readable result on stdout.")
    ] = False,
) -> None:
    """Keep the last N days of the prediction log: drop older day partitions (Postgres) or rows (SQLite)."""
    from rakuten_mlops.db.retention import run_retention

    settings = get_settings()
    print_backends(quiet=as_json)
    result = run_retention(settings, days)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        for line in result.describe():
            console.print(line)


@app.command("doctor")
def doctor(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the machine-readable result on stdout.")
    ] = False,
    record_alias: Annotated[
        bool,
        typer.Option(
            "--record-alias",
            help="First record the production alias where it is if its move was never recorded "
            "(a job killed between the move and its row); the alias itself is not moved.",
        ),
    ] = False,
    clean: Annotated[
        bool,
        typer.Option(
            "--clean",
            help="Then clear the leftovers older than --older-than: remove staging and unrecorded report "
            "folders, mark runs left running KILLED, measure a batch's missing live evaluation.",
        ),
    ] = False,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="With --clean: only leftovers their job last wrote this long ago (90s, 30m, 1h, 2d); "
            "younger ones may belong to a job still running.",
        ),
    ] = "1h",
) -> None:
    """Check that load batches, the registry, the production alias and the reports agree (after a crash).

    Exit 0 when consistent (leftovers of interrupted jobs are listed), 1 on any violation."""
    from rakuten_mlops.doctor import check
    from rakuten_mlops.doctor import clean as clean_leftovers
    from rakuten_mlops.monitoring.drift import parse_window

    try:
        age = parse_window(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from exc
    settings = get_settings()
    print_backends(quiet=as_json)
    if record_alias:
        from rakuten_mlops.training.registry import record_unrecorded_move

        recorded = record_unrecorded_move(settings, actor="cli")
        if recorded is not None:
            err_console.print(f"recorded the production alias on version {recorded} (event 'recovered')")
    result = check(settings)
    cleaning = None
    if clean:
        cleaning = clean_leftovers(settings, result, older_than=age)
        result = check(settings)  # what is left
    if as_json:
        document = result.to_dict() | ({"cleaned": cleaning.to_dict()} if cleaning else {})
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        for line in (cleaning.describe() if cleaning else []) + result.describe():
            console.print(line, markup=False)
    if not result.ok:
        raise typer.Exit(1)


def _register_areas() -> None:
    """Each area adds its commands (imported here, after this module's console exists: they use it)."""
    from rakuten_mlops.monitoring.commands import register as register_monitoring
    from rakuten_mlops.operator_cli import operator_app
    from rakuten_mlops.scoring.commands import register as register_scoring
    from rakuten_mlops.serving.commands import register as register_serving
    from rakuten_mlops.training.commands import register as register_training
    from rakuten_mlops.ui.commands import register as register_ui

    for register in (register_training, register_serving, register_scoring, register_monitoring, register_ui):
        register(app)
    app.add_typer(operator_app, name="operator")


_register_areas()


def _quiet_library_logs() -> None:
    """Keep library chatter (schema creation, migrations) out of what users read."""
    import logging

    for name in ("alembic", "mlflow.store", "mlflow.tracking._tracking_service"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    """Console-script entry point: domain errors become one clear line and a non-zero exit."""
    _quiet_library_logs()
    try:
        app()
    except PlatformError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
