"""Fixtures of the workflow tests: the rendered objects."""

from __future__ import annotations

import pytest
import yaml

from tests.workflows.argo_support import RENDERED_DIR


@pytest.fixture(scope="session")
def rendered() -> dict[str, dict]:
    """The committed YAML files, parsed: file name -> object."""
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(RENDERED_DIR.glob("*.yaml"))}


@pytest.fixture(scope="session")
def rendered_objects(rendered: dict[str, dict]) -> list[dict]:
    return list(rendered.values())
