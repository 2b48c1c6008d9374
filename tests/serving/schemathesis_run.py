"""Schemathesis' own runner (``schemathesis run --checks all``) against a live API over HTTP.

Every check of the tool runs, not only "no 5xx": a schema-valid request must be accepted
(``positive_data_acceptance``), a schema-violating one refused (``negative_data_rejection``),
each answer's status, content type, headers and body must be the documented ones, and so on.
:func:`run_contract` returns what its JSON and NDJSON reports say: operations tested, cases
generated, checks evaluated and the failures, each with the tool's own report of it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import VENV_BIN

# A schema-violating request may also be refused for its size (413: the body limit is in bytes,
# which a JSON schema cannot say) besides the tool's default list of refusals.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5XX"]
"""


@dataclass
class ContractRun:
    operations_tested: int
    cases_generated: int
    checks: Counter = field(default_factory=Counter)  # check name -> evaluations
    failed_checks: Counter = field(default_factory=Counter)  # check name -> failures
    modes: Counter = field(default_factory=Counter)  # positive / negative cases sent
    sent: Counter = field(default_factory=Counter)  # (mode, "METHOD /path") -> cases sent
    failures: list[str] = field(default_factory=list)  # the tool's report of each failure
    output: str = ""
    exit_code: int = 0

    @property
    def checks_run(self) -> int:
        return sum(self.checks.values())


def run_contract(
    base_url: str,
    workdir: Path,
    *,
    max_examples: int,
    token: str | None = None,
    include_paths: tuple[str, ...] = (),
    phases: str = "examples,coverage,fuzzing,stateful",
    seed: int = 1,
    timeout: float = 900,
) -> ContractRun:
    """Run every check on the operations of ``base_url``'s own OpenAPI schema (``include_paths``
    only, when given), ``max_examples`` generated cases per operation and phase."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    reports = workdir / "reports"
    cmd = [
        str(VENV_BIN / "schemathesis"), "--config-file", str(config), "run", f"{base_url}/openapi.json",
        "--checks", "all", "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "1",
        "--phases", phases, "--request-timeout", "30", "--report", "json,ndjson", "--report-dir", str(reports),
        "--output-truncate", "false",
    ]  # fmt: skip
    if token is not None:
        cmd += ["--header", f"Authorization: Bearer {token}"]
    for path in include_paths:
        cmd += ["--include-path", path]
    done = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env={**os.environ, "NO_COLOR": "1"}
    )
    summary = json.loads(next(reports.glob("json-*.json")).read_text())
    run = ContractRun(
        operations_tested=summary["operations"]["tested"],
        cases_generated=summary["test_cases"]["generated"],
        output=done.stdout + done.stderr,
        exit_code=done.returncode,
    )
    for line in next(reports.glob("ndjson-*.ndjson")).read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if event is None:
            continue
        for case in (event.get("recorder") or {}).get("cases", {}).values():
            value = case["value"]
            mode = value.get("meta", {}).get("generation", {}).get("mode")
            if mode:
                run.modes[mode] += 1
                run.sent[(mode, f"{value['method']} {value['path']}")] += 1
        for case_checks in (event.get("recorder") or {}).get("checks", {}).values():
            for check in case_checks:
                run.checks[check["name"]] += 1
                if check["status"] == "failure":
                    run.failed_checks[check["name"]] += 1
    if done.returncode != 0 or run.failed_checks:
        run.failures.append(_failures_section(run.output))
    return run


def _failures_section(output: str) -> str:
    """The FAILURES and ERRORS part of the tool's report (the whole output when it has none)."""
    start = min((i for i in (output.find("= FAILURES ="), output.find("= ERRORS =")) if i >= 0), default=0)
    return output[start:]
