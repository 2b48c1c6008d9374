"""Helpers of the workflow tests: the rendered objects' schemas and the CLI the steps call."""

from __future__ import annotations

import functools
import json

import pytest

from tests.support import REPO, SHARED

ARGO_SCHEMAS = SHARED / "schemas" / "argoproj.io"
RENDERED_DIR = REPO / "charts" / "rakuten-mlops" / "files" / "workflows"


@functools.cache
def argo_validator(kind: str):
    import jsonschema

    path = ARGO_SCHEMAS / f"{kind.lower()}_v1alpha1.json"
    if not path.is_file():
        pytest.fail(f"missing schema {path}: the tests need ../shared beside the repository")
    return jsonschema.Draft202012Validator(json.loads(path.read_text()))


def schema_errors(doc: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
        for e in argo_validator(doc["kind"]).iter_errors(doc)
    ]


# ---------------------------------------------------------------- the CLI the steps call


@functools.cache
def cli_options() -> dict[str, set[str]]:
    """``{"data load": {"--source", ...}, "train": {...}}`` from the real Typer app; empty if it does not import."""
    try:
        import typer

        from rakuten_mlops.cli import app
    except Exception:
        return {}
    found: dict[str, set[str]] = {}

    def walk(command, prefix: str) -> None:  # groups are duck-typed: typer may vendor its own click
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found[prefix] = {
                opt for p in command.params for opt in getattr(p, "opts", []) if opt.startswith("-")
            }

    walk(typer.main.get_command(app), "")
    return found


def cli_lacks(command: str, *options: str) -> bool:
    """True while ``rakuten-mlops COMMAND`` (with these options) does not exist yet."""
    have = cli_options()
    return command not in have or not set(options) <= have[command]


def waiting_for(command: str, *options: str):
    """xfail a test until the CLI command it drives exists; it runs for real as soon as it does."""
    return pytest.mark.xfail(
        cli_lacks(command, *options),
        reason=f"waiting for `rakuten-mlops {command} {' '.join(options)}`".rstrip(),
        strict=False,
        run=False,  # it cannot pass without the command: don't spend minutes proving that
    )
