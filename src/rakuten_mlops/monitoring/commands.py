"""CLI: ``rakuten-mlops drift``, ``estimate``, ``decide`` and ``evaluate-feedback`` (registered by
``rakuten_mlops.cli``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the machine-readable result on stdout.")]
OutputFile = Annotated[Path | None, typer.Option("--output", help="Also write the JSON result to this file.")]


def _write(payload: dict, output: Path | None, as_json: bool) -> None:
    text = json.dumps(payload, indent=2, default=str)
    if output is not None:
        from rakuten_mlops.cli import write_result_file

        write_result_file(output, text + "\n")
    if as_json:
        sys.stdout.write(text + "\n")


def drift(
    window: Annotated[
        str | None, typer.Option(help="How far back the prediction log is read: 7d, 24h, 30m, 2w.")
    ] = None,
    as_json: JsonFlag = False,
    output: OutputFile = None,
) -> None:
    """Compare recent predictions with the production model's training data (Evidently report)."""
    from rakuten_mlops.cli import console, print_backends
    from rakuten_mlops.monitoring.drift import parse_window, run_drift_check
    from rakuten_mlops.settings import get_settings

    settings = get_settings()
    print_backends(quiet=as_json)
    try:
        parse_window(window or settings.drift_window)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--window") from exc
    check = run_drift_check(settings, window)
    _write(check.summary, output, as_json)
    if not as_json:
        render_drift(check.summary, console)


def render_drift(summary: dict, console) -> None:
    from rich.table import Table

    if summary["status"] == "no_production_model":
        console.print(summary["message"])
        console.print("severity: [bold]none[/bold]")
        return
    console.print(
        f"drift of production model version {summary['model_version']} over the last {summary['window']}: "
        f"{summary['n_current']:,} predictions vs {summary['n_reference']:,} reference rows "
        f"(batches {','.join(map(str, summary['reference_batch_ids'])) or '-'})"
    )
    if summary.get("n_current_estimated", summary["n_current"]) != summary["n_current"]:
        console.print(
            f"sampled log: {summary['n_current_logged']:,} rows logged for about "
            f"{summary['n_current_estimated']:,} predictions; tested at sampling rate {summary['current_sample_rate']:g}"
        )
    if summary["tests"]:
        table = Table(show_lines=False)
        for column in ("feature", "test", "score", "threshold", "drifted", "reference -> current"):
            table.add_column(column)
        for t in summary["tests"]:
            table.add_row(
                t["feature"], t["test"], f"{t['score']:.4g}",
                f"{'<' if t['kind'] == 'p_value' else '>='} {t['threshold']:g}",
                "[bold red]yes[/bold red]" if t["drifted"] else "no", t["detail"],
            )  # fmt: skip
        console.print(table)
    for skipped in summary.get("skipped", []):
        console.print(f"[dim]skipped {skipped['feature']} ({skipped['test']}): {skipped['reason']}[/dim]")
    color = {"none": "green", "low": "yellow", "medium": "dark_orange", "high": "bold red"}[
        summary["severity"]
    ]
    console.print(f"severity: [{color}]{summary['severity']}[/{color}] - {summary['message']}")
    if summary.get("html_path"):
        console.print(f"HTML report: {summary['html_path']}")
    console.print(
        f"summary: {summary['json_path']} (MLflow run {summary['mlflow_run_id']}, experiment rakuten_drift)"
    )


def estimate(
    window: Annotated[
        str, typer.Option(help="Length of each window of the prediction log: 1d, 12h, 7d.")
    ] = "1d",
    windows: Annotated[
        int, typer.Option(min=1, max=90, help="How many consecutive windows, newest last.")
    ] = 1,
    as_json: JsonFlag = False,
    output: OutputFile = None,
) -> None:
    """Estimate the production model's F1 per window from its logged probabilities (no labels needed)."""
    from rakuten_mlops.cli import console, print_backends
    from rakuten_mlops.monitoring.drift import parse_window
    from rakuten_mlops.monitoring.estimate import run_estimate
    from rakuten_mlops.settings import get_settings

    settings = get_settings()
    print_backends(quiet=as_json)
    try:
        parse_window(window)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--window") from exc
    run = run_estimate(settings, window, windows=windows)
    _write(run.summary, output, as_json)
    if not as_json:
        render_estimate(run.summary, console)


def _score(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def render_estimate(summary: dict, console) -> None:
    from rich.table import Table

    if summary["status"] == "no_production_model":
        console.print(summary["message"])
        return
    table = Table(title=f"estimated performance of production model version {summary['model_version']}")
    for column in ("window", "predictions", "weighted F1", "90% interval", "macro F1", "accuracy",
                   "trusted", "realized F1 (labelled)"):  # fmt: skip
        table.add_column(column)
    for w in summary["windows"]:
        low, high = w["interval"]
        table.add_row(
            f"{w['window_start'][:16]} .. {w['window_end'][:16]}", f"{w['n']:,}", _score(w["f1_weighted"]),
            "n/a" if low is None else f"[{low:.4f}, {high:.4f}]", _score(w["f1_macro"]), _score(w["accuracy"]),
            "yes" if w["trusted"] else "[bold red]no[/bold red]",
            f"{_score(w['realized_f1_weighted'])} ({w['n_labelled']:,})",
        )  # fmt: skip
    console.print(table)
    for reason in summary.get("untrusted_reasons", []):
        console.print(f"[yellow]not trusted: {reason}[/yellow]")
    if summary.get("mlflow_run_id"):
        console.print(f"recorded: MLflow run {summary['mlflow_run_id']} (experiment {summary['experiment']})")


def decide(as_json: JsonFlag = False, output: OutputFile = None) -> None:
    """Decide whether to retrain: live F1, estimated F1, backlog since training, latest drift severity."""
    from rakuten_mlops.cli import console, print_backends
    from rakuten_mlops.monitoring.decision import decide as make_decision
    from rakuten_mlops.monitoring.decision import describe
    from rakuten_mlops.settings import get_settings

    settings = get_settings()
    print_backends(quiet=as_json)
    decision = make_decision(settings)
    _write(decision.to_dict(), output, as_json)
    if not as_json:
        for line in describe(decision):
            console.print(line)


def _valid_window(text: str) -> str:
    from rakuten_mlops.monitoring.drift import parse_window

    try:
        parse_window(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return text


def evaluate_feedback(
    window: Annotated[
        str,
        typer.Option(
            help="Predictions made over the last 1d, 24h, 7d, ... (their labels may come later).",
            callback=_valid_window,
        ),
    ] = "1d",
    min_labels: Annotated[
        int, typer.Option(min=1, help="Store a version's result only with at least this many labels.")
    ] = 100,
    as_json: JsonFlag = False,
    output: OutputFile = None,
) -> None:
    """Realized F1 per model version from the labels of POST /feedback (stored for decide and /metrics)."""
    from rakuten_mlops.cli import console, print_backends
    from rakuten_mlops.monitoring.feedback import evaluate_feedback as run_evaluation
    from rakuten_mlops.settings import get_settings

    settings = get_settings()
    print_backends(quiet=as_json)
    run = run_evaluation(settings, window, min_labels=min_labels)
    _write(run.to_dict(), output, as_json)
    if as_json:
        return
    console.print(
        f"feedback labels of predictions from {run.window_start:%Y-%m-%d %H:%M} to "
        f"{run.window_end:%Y-%m-%d %H:%M} UTC (last {window})"
    )
    if not run.versions:
        console.print("no labelled prediction in this window: nothing evaluated")
    for v in run.versions:
        kept = f"stored as evaluation {v.evaluation_id}" if v.evaluation_id else v.note
        console.print(
            f"  version {v.model_version}: {v.n:,} labels, weighted F1 {v.f1_weighted:.4f}, "
            f"macro F1 {v.f1_macro:.4f}, accuracy {v.accuracy:.4f} ({kept})"
        )


def register(app: typer.Typer) -> None:
    """Add ``drift``, ``estimate``, ``decide`` and ``evaluate-feedback`` to the ``rakuten-mlops`` command line."""
    app.command("drift")(drift)
    app.command("estimate")(estimate)
    app.command("decide")(decide)
    app.command("evaluate-feedback")(evaluate_feedback)
