"""Submit a run of an installed workflow object to an Argo server (``ARGO_SERVER``, ``ARGO_TOKEN``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from workflows import common
from workflows.render import build_all


class SubmitError(RuntimeError):
    """The submission could not be made (unknown name, no server configured, server refused)."""


def objects_by_name() -> dict[str, object]:
    return {obj.name: obj for obj in build_all().values()}


def submit(
    name: str,
    parameters: Mapping[str, str] | None = None,
    *,
    server: str | None = None,
    token: str | None = None,
    namespace: str | None = None,
    apply: bool = False,
    verify_ssl: bool = True,
) -> str:
    """Start a Workflow from the installed object NAME (like ``argo submit --from``); returns its name.

    With ``apply`` the object itself is created (or updated) from this code first, for clusters
    where the chart did not install it.
    """
    from hera.workflows import WorkflowsService
    from hera.workflows.models import SubmitOpts, WorkflowSubmitRequest

    objects = objects_by_name()
    if name not in objects:
        raise SubmitError(f"unknown workflow {name!r}; choose one of {sorted(objects)}")
    server = server or os.environ.get("ARGO_SERVER")
    if not server:
        raise SubmitError("no Argo server: set ARGO_SERVER (e.g. https://localhost:2746) or pass --server")
    if "://" not in server:
        server = f"https://{server}"
    token = token or os.environ.get("ARGO_TOKEN") or None
    namespace = namespace or os.environ.get("ARGO_NAMESPACE") or common.NAMESPACE
    obj = objects[name]
    kind = obj.to_dict()["kind"]
    service = WorkflowsService(host=server, token=token, namespace=namespace, verify_ssl=verify_ssl)
    if apply:
        try:
            _apply(service, obj, kind, namespace)
        except Exception as exc:
            raise SubmitError(f"Argo server {server} refused to create/update {kind}/{name}: {exc}") from exc
    request = WorkflowSubmitRequest(
        namespace=namespace,
        resource_kind=kind,
        resource_name=name,
        submit_options=SubmitOpts(
            generate_name=f"{name}-",
            parameters=[f"{k}={v}" for k, v in (parameters or {}).items()] or None,
        ),
    )
    try:
        workflow = service.submit_workflow(request, namespace=namespace)
    except Exception as exc:  # hera raises plain exceptions carrying the server's answer
        raise SubmitError(f"Argo server {server} refused to submit {kind}/{name}: {exc}") from exc
    return workflow.metadata.name


def _apply(service, obj, kind: str, namespace: str) -> None:
    from hera.workflows.models import (
        CreateCronWorkflowRequest,
        UpdateCronWorkflowRequest,
        WorkflowTemplateCreateRequest,
        WorkflowTemplateUpdateRequest,
    )

    obj.namespace = namespace
    model = obj.build()
    if kind == "WorkflowTemplate":
        try:
            current = service.get_workflow_template(obj.name, namespace=namespace)
            model.metadata.resource_version = current.metadata.resource_version
            service.update_workflow_template(
                obj.name, WorkflowTemplateUpdateRequest(template=model), namespace
            )
        except Exception:
            service.create_workflow_template(WorkflowTemplateCreateRequest(template=model), namespace)
    else:
        try:
            current = service.get_cron_workflow(obj.name, namespace=namespace)
            model.metadata.resource_version = current.metadata.resource_version
            service.update_cron_workflow(obj.name, UpdateCronWorkflowRequest(cron_workflow=model), namespace)
        except Exception:
            service.create_cron_workflow(CreateCronWorkflowRequest(cron_workflow=model), namespace)
