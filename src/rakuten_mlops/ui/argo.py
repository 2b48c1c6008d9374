"""The Argo server's REST API (``ARGO_SERVER``), as the argo CLI reads its settings."""

from __future__ import annotations

import os
from typing import Any

import httpx

from rakuten_mlops.settings import Settings


class ArgoError(RuntimeError):
    """The Argo server is not configured, cannot be reached, or refused the request."""


def base_url(server: str) -> str:
    """``host:port`` means HTTPS unless ARGO_SECURE=false; a full URL is used as is."""
    server = server.rstrip("/")
    if "://" in server:
        return server
    scheme = "http" if os.environ.get("ARGO_SECURE", "true").lower() == "false" else "https"
    return f"{scheme}://{server}"


def client(settings: Settings, timeout: float = 10.0) -> httpx.Client:
    if not settings.argo_server:
        raise ArgoError("ARGO_SERVER is not set")
    headers = {"Accept": "application/json"}
    if settings.argo_token is not None:
        token = settings.argo_token.get_secret_value().strip()
        headers["Authorization"] = token if token.lower().startswith("bearer ") else f"Bearer {token}"
    verify = os.environ.get("ARGO_INSECURE_SKIP_VERIFY", "false").lower() != "true"
    return httpx.Client(
        base_url=base_url(settings.argo_server), headers=headers, timeout=timeout, verify=verify
    )


def submit(settings: Settings, kind: str, name: str, actor: str = "ui") -> dict[str, Any]:
    """Start a Workflow from an installed ``CronWorkflow``/``WorkflowTemplate`` (``argo submit --from``).

    Returns ``{"name", "phase"}`` of the new Workflow.
    """
    namespace = settings.namespace
    body = {
        "namespace": namespace,
        "resourceKind": kind,
        "resourceName": name,
        "submitOptions": {"generateName": f"{name}-{actor}-", "labels": f"rakuten.io/trigger={actor}"},
    }
    try:
        with client(settings) as http:
            response = http.post(f"/api/v1/workflows/{namespace}/submit", json=body)
    except httpx.HTTPError as exc:
        raise ArgoError(f"cannot reach the Argo server at {settings.argo_server}: {exc}") from exc
    if response.status_code >= 300:
        raise ArgoError(
            f"the Argo server refused {kind}/{name} ({response.status_code}): {response.text[:300]}"
        )
    workflow = response.json()
    return {
        "name": workflow.get("metadata", {}).get("name", ""),
        "phase": (workflow.get("status") or {}).get("phase") or "Pending",
    }
