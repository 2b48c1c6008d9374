"""Every `helm install|upgrade|template ... --set ...` command shown in README.md and docs/*.md
renders with the chart (schema included) into objects that pass the strict validation."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from tests.packaging.chart_support import CHART, validate_object
from tests.support import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HELM_COMMAND = re.compile(r"helm (?:install|upgrade|template)\b[^`\n]*")


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) of each helm command with --set/--set-string, continuation lines joined."""
    found = []
    for doc in DOCS:
        text = doc.read_text().replace("\\\n", " ")
        for match in HELM_COMMAND.finditer(text):
            command = match.group(0).split(" #", 1)[0].strip().rstrip(";")
            if "--set" in command:
                line = text[: match.start()].count("\n") + 1
                found.append((f"{doc.relative_to(REPO)}:{line}", command))
    return found


COMMANDS = documented_commands()


def template_args(command: str) -> list[str]:
    """The `helm template` arguments that reproduce the command's values: -f files and --set*."""
    words = shlex.split(command)
    args: list[str] = []
    for i, word in enumerate(words):
        if word in ("--set", "--set-string", "-f", "--values"):
            value = words[i + 1]
            if word in ("-f", "--values"):
                value = str(REPO / value.replace("$(CHART)", "charts/rakuten-mlops"))
            args += [word, value]
        elif word.startswith(("--set=", "--set-string=")):
            args.append(word)
    return args


def test_the_docs_show_documented_set_commands():
    assert len(COMMANDS) >= 2, COMMANDS
    assert any("workflows.schedules." in c for _, c in COMMANDS)
    assert any("workflows.suspend." in c for _, c in COMMANDS)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_helm_command_renders_valid_objects(render, where, command):
    proc = render.run("template", "rakuten", str(CHART), "--namespace", "rakuten", *template_args(command))
    assert proc.returncode == 0, f"{where}: `{command}` is refused:\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    for doc in docs:
        validate_object(doc, "1.31")
