"""``rakuten-mlops serve``: the prediction API under uvicorn."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer


def prepare_multiprocess_dir(workers: int) -> str | None:
    """Give every worker one Prometheus directory (fresh: stale files would add old counts)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path and workers <= 1:
        return None
    if not path:
        path = tempfile.mkdtemp(prefix="rakuten-prometheus-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    Path(path).mkdir(parents=True, exist_ok=True)
    for stale in Path(path).glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (metrics are aggregated).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Run the prediction API (model from the registry, hot reload, metrics, prediction log)."""
    import uvicorn

    from rakuten_mlops.cli import print_backends

    print_backends()
    created = prepare_multiprocess_dir(workers)
    created_here = created and created.startswith(tempfile.gettempdir()) and "rakuten-prometheus-" in created
    try:
        uvicorn.run(
            "rakuten_mlops.serving.app:create_app_from_env",
            factory=True,
            # uvicorn's httptools protocol, refusing prediction requests beyond the in-flight
            # limits before the ASGI app (an import string: each worker process imports it)
            http="rakuten_mlops.serving.protocol:AdmissionHttpProtocol",
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=20,
            # a worker answers uvicorn's health pings only once its imports are done: on a busy
            # node (or a small CPU limit) that takes longer than uvicorn's 5 s, and the workers
            # would be killed and restarted forever
            timeout_worker_healthcheck=60,
        )
    finally:
        if created_here:
            shutil.rmtree(created, ignore_errors=True)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``rakuten-mlops`` command line."""
    app.command("serve")(serve)
