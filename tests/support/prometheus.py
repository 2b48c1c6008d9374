"""Debian's ``prometheus`` on a free loopback port, scraping one target every second."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.processes import ManagedProcess, free_port

CONFIG = """\
global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: rakuten-api
    static_configs: [{static}]
"""


def prometheus_binary() -> str:
    """The prometheus binary; a failure under CI (.ci/setup.d installs it), a skip elsewhere."""
    binary = shutil.which("prometheus")
    if binary is None:
        reason = "Debian's prometheus is not installed (.ci/setup.d installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: under CI this test must run")
        pytest.skip(reason)
    return binary


def start_prometheus(
    root: Path,
    target: str | list[str],
    timeout: float = 60,
    config: str | None = None,
    labels: dict[str, str] | None = None,
) -> tuple[ManagedProcess, str]:
    """Prometheus scraping ``target`` (host:port, or several) as job ``rakuten-api``, each series
    with ``labels`` (what a ServiceMonitor adds: namespace, service), or running ``config``;
    returns it and its URL."""
    root.mkdir(parents=True, exist_ok=True)
    targets = [target] if isinstance(target, str) else target
    static = json.dumps({"targets": targets, "labels": labels or {}})  # JSON is YAML
    (root / "prometheus.yml").write_text(config if config is not None else CONFIG.format(static=static))
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [
        prometheus_binary(), f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'tsdb'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ]  # fmt: skip
    process = ManagedProcess("prometheus", cmd, root / "prometheus.log", ready_url=f"{url}/-/ready")
    return process.start(timeout), url


def instant_query(url: str, expr: str) -> list[dict]:
    """The result of one PromQL instant query on the Prometheus at ``url`` (its ``data.result``)."""
    import httpx

    rsp = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    rsp.raise_for_status()
    return rsp.json()["data"]["result"]
