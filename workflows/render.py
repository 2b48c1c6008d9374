"""Render every workflow object to YAML (the files the chart ships)."""

from __future__ import annotations

from pathlib import Path

import yaml

from workflows import catalogue_rescore, drift_check, incremental_load, retention, train

REPO = Path(__file__).resolve().parents[1]
OUTPUT_DIR = REPO / "charts" / "rakuten-mlops" / "files" / "workflows"
HEADER = "# Generated from workflows/{module}.py by `make render-workflows`: do not edit by hand.\n"


def build_all() -> dict[str, object]:
    """File name -> Hera object, in a stable order."""
    return {
        f"{incremental_load.NAME}.yaml": incremental_load.build(),
        f"{train.NAME}.yaml": train.build_template(),
        f"{train.WEEKLY_NAME}.yaml": train.build_weekly(),
        f"{drift_check.NAME}.yaml": drift_check.build(),
        f"{catalogue_rescore.NAME}.yaml": catalogue_rescore.build(),
        f"{retention.NAME}.yaml": retention.build(),
    }


MODULES = {
    f"{incremental_load.NAME}.yaml": "incremental_load",
    f"{train.NAME}.yaml": "train",
    f"{train.WEEKLY_NAME}.yaml": "train",
    f"{drift_check.NAME}.yaml": "drift_check",
    f"{catalogue_rescore.NAME}.yaml": "catalogue_rescore",
    f"{retention.NAME}.yaml": "retention",
}


def to_yaml(obj: dict) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120)


def render_all() -> dict[str, str]:
    """File name -> YAML text, exactly what ``render`` writes."""
    return {
        name: HEADER.format(module=MODULES[name]) + to_yaml(obj.to_dict())
        for name, obj in build_all().items()
    }


def write(output_dir: Path = OUTPUT_DIR) -> list[Path]:
    """Write the YAML files, removing stale ones this code no longer produces."""
    output_dir.mkdir(parents=True, exist_ok=True)
    rendered = render_all()
    for stale in output_dir.glob("*.yaml"):
        if stale.name not in rendered:
            stale.unlink()
    paths = []
    for name, text in rendered.items():
        path = output_dir / name
        path.write_text(text)
        paths.append(path)
    return paths


def stale_files(output_dir: Path = OUTPUT_DIR) -> list[str]:
    """Names of files that are missing, different, or no longer produced."""
    rendered = render_all()
    stale = [
        n
        for n, text in rendered.items()
        if not (output_dir / n).is_file() or (output_dir / n).read_text() != text
    ]
    stale += [p.name for p in output_dir.glob("*.yaml") if p.name not in rendered]
    return sorted(stale)
