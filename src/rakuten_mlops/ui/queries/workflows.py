"""Run an installed Argo workflow now (Data and Monitoring pages)."""

from __future__ import annotations

from rakuten_mlops.argo import ArgoServer
from rakuten_mlops.settings import Settings

LOAD_WORKFLOW = ("CronWorkflow", "incremental-load")
DRIFT_WORKFLOW = ("CronWorkflow", "drift-check")


def submit_workflow(settings: Settings, workflow: tuple[str, str]) -> str:
    """Start one run of an installed Argo workflow now; returns a line naming the new Workflow."""
    kind, name = workflow
    started = ArgoServer.from_settings(settings).submit(
        kind, name, generate_name=f"{name}-ui-", labels="rakuten.io/trigger=ui"
    )
    phase = (started.get("status") or {}).get("phase") or "Pending"
    return (
        f"submitted {kind} {name}: Workflow {started.get('metadata', {}).get('name', '')} ({phase}) "
        f"in namespace {settings.namespace}"
    )
