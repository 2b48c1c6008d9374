"""The faults-and-load campaign (`make chaos`): every scenario records its figures through the
``chaos_figures`` fixture; the session prints them as one table and writes it as Markdown to
``$RAKUTEN_CHAOS_REPORT`` (default ``.rakuten/chaos-report.md``), rewritten after every scenario.

``RAKUTEN_CHAOS_SCALE`` (default 1.0) multiplies every scenario duration, so a quick dry run of the
whole campaign is ``RAKUTEN_CHAOS_SCALE=0.1 make chaos``; the figures of a scaled run say so."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_FIGURES = pytest.StashKey[list["Figure"]]()


@dataclass(frozen=True)
class Figure:
    scenario: str
    name: str
    value: str
    goal: str
    met: bool | None  # None: a figure reported without a goal


class ChaosFigures:
    """What one scenario measured; ``record`` keeps the row, the scenario still asserts its goals."""

    def __init__(self, rows: list[Figure], scenario: str) -> None:
        self._rows = rows
        self.scenario = scenario

    def record(self, name: str, value: object, goal: str = "", met: bool | None = None) -> None:
        self._rows.append(Figure(self.scenario, name, _format(value), goal, met))


def chaos_scale() -> float:
    return float(os.environ.get("RAKUTEN_CHAOS_SCALE", "1.0"))


def scaled(seconds: float, floor: float = 5.0) -> float:
    """A scenario duration after ``RAKUTEN_CHAOS_SCALE``, never under ``floor`` seconds."""
    return max(floor, seconds * chaos_scale())


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = []


@pytest.fixture
def chaos_figures(request: pytest.FixtureRequest) -> Iterator[ChaosFigures]:
    rows = request.config.stash[_FIGURES]
    yield ChaosFigures(rows, request.node.name)
    # after every scenario, so an interrupted campaign keeps the rows of those that ran
    _report_path(request.config).write_text(_table(rows))


def _report_path(config: pytest.Config) -> Path:
    target = Path(
        os.environ.get("RAKUTEN_CHAOS_REPORT", Path(config.rootpath) / ".rakuten" / "chaos-report.md")
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _table(rows: list[Figure]) -> str:
    lines = [
        f"Chaos campaign figures (RAKUTEN_CHAOS_SCALE={chaos_scale()})",
        "",
        "| scenario | figure | value | goal | met |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.scenario} | {row.name} | {row.value} | {row.goal} | {met} |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_FIGURES, [])
    if not rows:
        return
    table = _table(rows)
    terminalreporter.write_sep("=", "chaos figures")
    terminalreporter.write(table)
    target = _report_path(config)
    target.write_text(table)
    terminalreporter.write_line(f"written to {target}")
