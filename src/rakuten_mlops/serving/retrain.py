"""Retraining started from the API: a local background process, or an Argo workflow on Kubernetes."""

from __future__ import annotations

from typing import Any

from rakuten_mlops.argo import ArgoError, ArgoServer
from rakuten_mlops.serving.errors import RetrainSubmissionError
from rakuten_mlops.settings import Settings
from rakuten_mlops.training.retrain import LocalRetrainer


class ArgoRetrainer:
    """Submits the ``rakuten-train`` WorkflowTemplate to the Argo server."""

    mode = "kubernetes"

    def __init__(self, settings: Settings, timeout: float = 15.0):
        if not settings.argo_server:
            raise RetrainSubmissionError("RAKUTEN_RETRAIN_MODE=kubernetes needs ARGO_SERVER")
        self.settings = settings
        self.server = ArgoServer.from_settings(settings, timeout=timeout)

    def start(self) -> dict[str, Any]:
        template = self.settings.train_workflow_template
        try:
            workflow = self.server.submit(
                "WorkflowTemplate",
                template,
                generate_name=f"{template}-api-",
                labels="rakuten.io/trigger=api",
            )
        except ArgoError as exc:
            raise RetrainSubmissionError(str(exc)) from exc
        return self._describe(workflow)

    def status(self, job_id: str) -> dict[str, Any]:
        try:
            workflow = self.server.workflow(job_id)
        except ArgoError as exc:
            raise RetrainSubmissionError(str(exc)) from exc
        if workflow is None:
            raise KeyError(job_id)
        return self._describe(workflow)

    def _describe(self, workflow: dict) -> dict[str, Any]:
        meta, status = workflow.get("metadata", {}), workflow.get("status", {}) or {}
        phase = (status.get("phase") or "Pending").lower()
        mapped = {"pending": "running", "running": "running", "succeeded": "succeeded"}.get(phase, "failed")
        return {
            "id": meta.get("name", ""),
            "mode": self.mode,
            "status": mapped,
            "started_at": status.get("startedAt") or meta.get("creationTimestamp"),
            "finished_at": status.get("finishedAt"),
            "exit_code": None,
        }


def make_retrainer(settings: Settings) -> LocalRetrainer | ArgoRetrainer:
    return ArgoRetrainer(settings) if settings.retrain_mode == "kubernetes" else LocalRetrainer(settings)
