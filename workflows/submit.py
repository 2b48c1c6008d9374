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
    from rakuten_mlops.argo import ArgoError, ArgoServer, base_url
    from rakuten_mlops.settings import Settings

    objects = objects_by_name()
    if name not in objects:
        raise SubmitError(f"unknown workflow {name!r}; choose one of {sorted(objects)}")
    settings = Settings()
    server = server if server is not None else settings.argo_server
    if not server:
        raise SubmitError("no Argo server: set ARGO_SERVER (e.g. https://localhost:2746) or pass --server")
    if token is None and settings.argo_token is not None:
        token = settings.argo_token.get_secret_value()
    argo = ArgoServer(
        url=base_url(server, settings.argo_secure),
        namespace=namespace or os.environ.get("ARGO_NAMESPACE") or common.NAMESPACE,
        token=token,
        verify=verify_ssl and not settings.argo_insecure_skip_verify,
    )
    obj = objects[name]
    try:
        if apply:
            obj.namespace = argo.namespace
            argo.apply(obj.to_dict())
        kind = obj.to_dict()["kind"]
        parameters = [f"{k}={v}" for k, v in (parameters or {}).items()]
        workflow = argo.submit(kind, name, generate_name=f"{name}-", parameters=parameters)
    except ArgoError as exc:
        raise SubmitError(str(exc)) from exc
    return workflow["metadata"]["name"]
