"""CLI: ``rakuten-mlops score`` (registered by ``rakuten_mlops.cli``)."""

from __future__ import annotations

from typing import Annotated

import typer

from rakuten_mlops.scoring import DEFAULT_CHUNK_ROWS, DEFAULT_TOP_K


def score(
    input_: Annotated[
        str,
        typer.Option(
            "--input",
            help="Catalogue to score: an X file in the official CSV layout (*.csv) or Parquet "
            "(productid, designation, description), a local path or s3://BUCKET/KEY.",
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            help="Where to write the predictions: *.parquet or *.csv, a local path or s3://BUCKET/KEY."
        ),
    ],
    version: Annotated[
        str | None,
        typer.Option(help="Registry version to score with (default or empty: the production alias)."),
    ] = None,
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="Products read, scored and kept per chunk.")
    ] = DEFAULT_CHUNK_ROWS,
    top_k: Annotated[int, typer.Option(min=1, help="Classes kept per product, best first.")] = DEFAULT_TOP_K,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Scoring processes (default: one per core available).")
    ] = None,
    work: Annotated[
        str | None,
        typer.Option(
            help="Folder or s3:// prefix for finished chunks (default: .NAME.work beside the output)."
        ),
    ] = None,
) -> None:
    """Score a whole catalogue in chunks; a crashed run resumes without scoring finished chunks again."""
    from rakuten_mlops.cli import console, err_console, print_backends
    from rakuten_mlops.scoring.job import ChunkDone, score_catalogue
    from rakuten_mlops.settings import get_settings

    print_backends()

    def progress(done: ChunkDone) -> None:
        what = "kept from an earlier run" if done.reused else f"scored in {done.seconds:.2f}s"
        err_console.print(
            f"chunk {done.index + 1}: {done.rows:,} products {what}; "
            f"{done.rows_done:,} done, {done.read_share:.0%} of the input read"
        )

    result = score_catalogue(
        get_settings(), input_, output, version=version, chunk_rows=chunk_rows, top_k=top_k, work=work,
        workers=workers,
        on_chunk=progress,
    )  # fmt: skip
    console.print(result.describe())


def register(app: typer.Typer) -> None:
    """Add ``score`` to the ``rakuten-mlops`` command line."""
    app.command("score")(score)
